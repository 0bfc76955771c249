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
from datetime import datetime, timedelta
from uuid import UUID

import httpx

from services.kernel.db import Database

log = logging.getLogger("resellio.catchup")
CLOCK_MARGIN = timedelta(seconds=1)


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
        self._handled_at_sql = f'SELECT handled_at FROM "{db.schema}".inbox WHERE event_id = $1'
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

    async def handled_at(self, event_id: UUID) -> datetime | None:
        """When this service's inbox recorded the event; None if it has not yet."""
        async with self.db.driver() as db:
            return await db.fetchval(self._handled_at_sql, event_id)  # type: ignore[no-any-return]

    async def _caught_up(self, producer: str, deadline: float) -> datetime | bool | None:
        """Wait (until `deadline`) for the producer's newest event: when it was handled here,
        None when the producer has no such event, False when unreachable or out of time."""
        try:
            event_id = await self.head(producer)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("catch-up: %s unreachable: %s", producer, exc)
            return False
        if event_id is None:
            return None
        delay = 0.005
        while (handled_at := await self.handled_at(event_id)) is None:
            if time.monotonic() > deadline:
                log.warning("catch-up: %s event %s not handled in time", producer, event_id)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return handled_at

    async def __call__(self, *producers: str) -> None:
        """Wait until every event the producers had committed is handled here (bounded)."""
        deadline = time.monotonic() + self.timeout_s
        for producer in producers:
            await self._caught_up(producer, deadline)  # bounded: later ones find no time left

    async def changed_since(self, started: datetime, *producers: str) -> bool:
        """Catch up, then say whether the projection may differ from what a read begun at
        `started` saw: False only when every producer's newest event had been handled here
        well before then (asking again would give the same answer)."""
        deadline = time.monotonic() + self.timeout_s
        changed = False
        for producer in producers:
            handled_at = await self._caught_up(producer, deadline)
            if handled_at is False:
                return True
            # A margin for the clocks of this process and of PostgreSQL.
            if handled_at is not None and handled_at > started - CLOCK_MARGIN:  # type: ignore[operator]
                changed = True
        return changed
