"""Read-your-writes across services (API.md §1.8).

Before a service answers "no" from a projection (404, 400, 403), it catches up: it asks the
owning service for the newest event of the types it consumes (committed, maybe not yet
published) and waits briefly until its inbox has handled that event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from uuid import UUID

import httpx
from sqlalchemy import select

from services.kernel.db import Database

log = logging.getLogger("resellio.catchup")


class CatchUp:
    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        service_urls: dict[str, str],
        subscriptions: Iterable[str],
        timeout_s: float,
    ) -> None:
        self.db = db
        self.http = http
        self.urls = service_urls
        self.timeout_s = timeout_s
        self.types_by_producer: dict[str, list[str]] = {}
        # Lookups are numbered in the order they start; the newest per producer is kept.
        self._started = 0
        self._lookups: dict[str, tuple[int, asyncio.Future[UUID | None]]] = {}
        for event_type in subscriptions:
            producer = event_type.split(".", 1)[0]
            self.types_by_producer.setdefault(producer, []).append(event_type)

    async def head(self, producer: str) -> UUID | None:
        """The producer's newest event as of some moment after this call began. Callers that
        arrive while a lookup is on its way wait for the next one, and share it: a burst of
        refusals (a sold-out drop) costs a lookup per round trip, not one per request."""
        asked_after = self._started
        while True:
            running = self._lookups.get(producer)
            if running is not None and running[0] > asked_after:
                return await asyncio.shield(running[1])
            if running is not None and not running[1].done():
                # Started before we asked: it may miss a write answered meanwhile.
                await asyncio.wait([running[1]])
                continue
            self._started += 1
            lookup = asyncio.ensure_future(self._fetch_head(producer))
            self._lookups[producer] = (self._started, lookup)
            return await asyncio.shield(lookup)

    async def _fetch_head(self, producer: str) -> UUID | None:
        types = self.types_by_producer.get(producer)
        if not types:
            return None
        response = await self.http.get(
            f"{self.urls[producer].split(',')[0]}/internal/events/head",
            params={"types": ",".join(types)},
            timeout=self.timeout_s,
        )
        response.raise_for_status()
        event_id = response.json().get("event_id")
        return UUID(event_id) if event_id else None

    async def handled(self, event_id: UUID) -> bool:
        async with self.db.reader.connect() as conn:
            found = await conn.scalar(
                select(self.db.inbox.c.event_id).where(self.db.inbox.c.event_id == event_id)
            )
        return found is not None

    async def __call__(self, *producers: str) -> None:
        """Wait until every event the producers had committed is handled here (bounded)."""
        deadline = time.monotonic() + self.timeout_s
        for producer in producers:
            try:
                event_id = await self.head(producer)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("catch-up: %s unreachable: %s", producer, exc)
                continue
            if event_id is None:
                continue
            delay = 0.005
            while not await self.handled(event_id):
                if time.monotonic() > deadline:
                    log.warning("catch-up: %s event %s not handled in time", producer, event_id)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
