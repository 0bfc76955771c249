"""Read-your-writes across services (API.md §1.8).

Before a service answers "no" from a projection (404, 400, 403), it catches up: it asks the
owning service for the newest event of the types it consumes (committed, maybe not yet
published), and for those of them published a moment before it or not yet, and waits briefly
until its inbox has handled them all (the consumer applies several batches at once, so the
newest may be handled before an older one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from urllib.parse import urlencode
from uuid import UUID

import msgspec

from services.kernel.db import Database
from services.kernel.errors import ServiceUnavailable
from services.kernel.upstream import UpstreamError, Upstreams

log = logging.getLogger("resellio.catchup")
CLOCK_MARGIN = timedelta(seconds=1)


class Head(msgspec.Struct):
    """What /internal/events/head answers: the newest event of the types asked, if any, and
    the others of them published a moment ago (the consumer may apply them after the newest:
    it works on several batches at once)."""

    event_id: UUID | None = None
    recent: list[UUID] = []


class CatchUp:
    def __init__(
        self,
        db: Database,
        upstreams: Upstreams,
        subscriptions: Iterable[str],
        timeout_s: float,
    ) -> None:
        self.db = db
        self.upstreams = upstreams
        self.timeout_s = timeout_s
        # Lookups are numbered in the order they start; the newest per producer is kept.
        self._started = 0
        self._lookups: dict[str, tuple[int, asyncio.Future[Head]]] = {}
        # Which of some events the inbox recorded, and when.
        self._handled_sql = (
            f'SELECT event_id, handled_at FROM "{db.schema}".inbox WHERE event_id = ANY($1::uuid[])'
        )
        # Events found handled here: when (PostgreSQL's clock) and when this process first
        # found them so (its monotonic clock). A burst of refusals asks about the same newest
        # event, and once handled it stays handled (a replay that handles it again changes
        # nothing a read since then has not seen).
        self._handled: dict[UUID, tuple[datetime, float]] = {}
        # Called when an event is first found handled here: answers remembered before then
        # may not show it (`ChangeFeed.changed`, wired by the app factory). Another instance
        # that handled it says so by PostgreSQL's notification, which may arrive after this
        # process has read the inbox: a read that caught up must not be answered from memory
        # older than the event.
        self.on_newly_handled: Callable[[], None] = lambda: None
        self._types = set(subscriptions)
        types_by_producer: dict[str, list[str]] = {}
        for event_type in self._types:
            types_by_producer.setdefault(event_type.split(".", 1)[0], []).append(event_type)
        # What is asked of each producer (its /internal/events/head), written once.
        self._head_targets = {
            producer: f"/internal/events/head?{urlencode({'types': ','.join(types)})}"
            for producer, types in types_by_producer.items()
        }

    async def head(self, producer: str) -> Head:
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

    async def _fetch_head(self, producer: str) -> Head:
        target = self._head_targets.get(producer)
        if target is None:
            return Head()
        return await self.upstreams.get_json(producer, target, self.timeout_s, Head)

    async def _found_handled(self, event_ids: list[UUID]) -> list[tuple[datetime, float]] | None:
        """When this service's inbox recorded each of the events, and when this process found
        it so; None while one is not handled yet."""
        missing = [e for e in event_ids if e not in self._handled]
        if missing:
            async with self.db.driver() as db:
                rows = await db.fetch(self._handled_sql, missing)
            now = time.monotonic()
            for event_id, handled_at in rows:
                while len(self._handled) >= 1024:  # the oldest found goes first
                    self._handled.pop(next(iter(self._handled)))
                self._handled[event_id] = (handled_at, now)
            if rows:
                self.on_newly_handled()
            if len(rows) < len(missing):
                return None
        found = [self._handled[e] for e in event_ids if e in self._handled]
        return found if len(found) == len(event_ids) else None  # else forgotten meanwhile

    async def _caught_up(
        self, producer: str, deadline: float, strict: bool = False
    ) -> list[tuple[datetime, float]] | bool | None:
        """Wait (until `deadline`) for the producer's newest event and its recent ones: when
        each was handled here and when this process found it so, None when the producer has no
        such event, False when unreachable or out of time. `strict`: 503 when unreachable."""
        try:
            head = await self.head(producer)
        except UpstreamError as exc:
            log.warning("catch-up: %s unreachable: %s", producer, exc)
            if strict:
                raise ServiceUnavailable() from exc
            return False
        if head.event_id is None:
            return None
        waited_for = [head.event_id, *head.recent]
        delay = 0.005
        while (found := await self._found_handled(waited_for)) is None:
            if time.monotonic() > deadline:
                log.warning(
                    "catch-up: %s's newest event %s and %d before it not all handled in time",
                    producer,
                    head.event_id,
                    len(head.recent),
                )
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return found

    async def handled(self, events: Iterable[tuple[UUID, str]]) -> bool:
        """Wait (bounded) until these events (id, type), those of them this service consumes,
        are handled here; False when the time ran out. Exact: the newest event handled does not
        mean an older one is (the consumer works on several batches at once)."""
        waiting = {event_id for event_id, event_type in events if event_type in self._types}
        deadline = time.monotonic() + self.timeout_s
        delay = 0.005
        while waiting:
            async with self.db.driver() as db:
                waiting -= {row[0] for row in await db.fetch(self._handled_sql, waiting)}
            if not waiting:
                self.on_newly_handled()
                break
            if time.monotonic() > deadline:
                log.warning("catch-up: %d events not handled in time", len(waiting))
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def follows(self, producer: str) -> bool:
        """Whether this service consumes any of the producer's events."""
        return producer in self._head_targets

    async def __call__(self, *producers: str) -> bool:
        """Wait until every event the producers had committed is handled here (bounded);
        False when one was unreachable or the time ran out."""
        deadline = time.monotonic() + self.timeout_s
        if len(producers) == 1:
            return await self._caught_up(producers[0], deadline) is not False
        # Asked at once: a read that rests on two producers waits for the slower, not both.
        found = await asyncio.gather(*(self._caught_up(p, deadline) for p in producers))
        return all(f is not False for f in found)

    async def before_refusing(self, *producers: str) -> None:
        """Catch up before a refusal that rests on the producers' events; 503 when a producer
        cannot be asked (a needed service down, API.md §1.2: the refusal could be a 200 a
        moment later, §1.8). Its events not handled here in time (this service's consumer
        behind) is logged and the refusal stands, as the projection has it."""
        deadline = time.monotonic() + self.timeout_s
        for producer in producers:  # bounded: later ones find no time left
            await self._caught_up(producer, deadline, strict=True)

    async def changed_since(self, started: datetime, began: float, *producers: str) -> bool:
        """Catch up before a refusal, then say whether the projection may differ from what a
        read begun at `started` (this process's `time.monotonic()`: `began`) saw: False only
        when every event waited for had been handled here before then (asking again
        would give the same answer). Handled before is known when this process had already
        found the event handled when the read began, or when it was handled well before
        `started` (a margin for the clocks of this process and of PostgreSQL). 503 when a
        producer cannot be asked, as `before_refusing`."""
        deadline = time.monotonic() + self.timeout_s
        changed = False
        for producer in producers:
            found = await self._caught_up(producer, deadline, strict=True)
            if found is False:
                return True
            if isinstance(found, list):
                changed = changed or any(
                    found_at > began and handled_at > started - CLOCK_MARGIN
                    for handled_at, found_at in found
                )
        return changed
