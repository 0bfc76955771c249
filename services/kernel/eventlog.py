"""Reading the event log: every service's outbox rows, kept after publishing."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.settings import SERVICES

COLUMNS = (
    "id, event_id, type, version, occurred_at, aggregate_id, correlation_id, causation_id, "
    "sequence, published_at"
)


@dataclass(frozen=True)
class Filters:
    producer: str | None = None
    types: Sequence[str] = ()
    aggregate_id: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    published_only: bool = False


async def producers_with_log(
    engine: AsyncEngine, candidates: Sequence[str] = SERVICES
) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'outbox' AND table_schema = ANY(:s)"
            ),
            {"s": list(candidates)},
        )
        present = {r[0] for r in rows}
    return [s for s in candidates if s in present]


def _where(filters: Filters) -> tuple[str, dict[str, Any]]:
    clauses, params = ["TRUE"], {}
    if filters.types:
        clauses.append("type = ANY(:types)")
        params["types"] = list(filters.types)
    if filters.aggregate_id:
        clauses.append("aggregate_id = :aggregate")
        params["aggregate"] = filters.aggregate_id
    if filters.correlation_id:
        clauses.append("correlation_id = :corr")
        params["corr"] = filters.correlation_id
    if filters.since:
        clauses.append("occurred_at >= :since")
        params["since"] = filters.since
    if filters.until:
        clauses.append("occurred_at < :until")
        params["until"] = filters.until
    if filters.published_only:
        clauses.append("sequence IS NOT NULL")
    return " AND ".join(clauses), params


async def list_events(
    engine: AsyncEngine,
    filters: Filters,
    limit: int = 50,
    candidates: Sequence[str] = SERVICES,
) -> list[Any]:
    """Newest last; each row has a `producer` column."""
    logs = await producers_with_log(engine, candidates)
    producers = [p for p in logs if filters.producer in (None, p)]
    if not producers:
        return []
    where, params = _where(filters)
    parts = [
        f"(SELECT '{p}' AS producer, {COLUMNS} FROM {p}.outbox WHERE {where})" for p in producers
    ]
    sql = (
        f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS log "
        f"ORDER BY occurred_at DESC, producer, id DESC LIMIT :limit"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(text(sql), {**params, "limit": limit})).all()
    return list(reversed(rows))


# How far below each log's newest id a follower starts: ids drawn before it started whose
# transactions had not committed yet.
_FOLLOW_BACK = 1000


async def follow_events(
    engine: AsyncEngine,
    filters: Filters,
    interval: float = 0.5,
    settle_s: float = 10.0,
    candidates: Sequence[str] = SERVICES,
) -> AsyncIterator[Any]:
    """The last ten events, then each event once, as it is committed. An event's id is drawn
    when its transaction inserts it, and that transaction may commit after one holding a later
    id: each poll reads again every id above the newest one a poll saw `settle_s` seconds ago
    (by this process's clock) and leaves out those shown, so an event is missed only if its
    transaction committed more than that after a later id was seen (a service's transactions
    take milliseconds)."""
    logs = await producers_with_log(engine, candidates)
    producers = [p for p in logs if filters.producer in (None, p)]
    where, params = _where(filters)
    settle = max(settle_s, 2 * interval)
    shown: dict[str, set[int]] = {p: set() for p in producers}

    async def newest_ids(conn: AsyncConnection) -> dict[str, int]:
        return {
            p: int(await conn.scalar(text(f"SELECT coalesce(max(id), 0) FROM {p}.outbox")))
            for p in producers
        }

    async with engine.connect() as conn:
        heads = await newest_ids(conn)
    floor = {p: max(0, heads[p] - _FOLLOW_BACK) for p in producers}
    seen_at = deque([(time.monotonic(), heads)])  # the newest ids each poll saw, and when

    async def unshown() -> list[Any]:
        rows: list[Any] = []
        async with engine.connect() as conn:
            seen = await newest_ids(conn)
            for p in producers:
                found = await conn.execute(
                    text(
                        f"SELECT '{p}' AS producer, {COLUMNS} FROM {p}.outbox WHERE {where} "
                        "AND id > :floor AND NOT (id = ANY(:shown)) ORDER BY id"
                    ),
                    {**params, "floor": floor[p], "shown": sorted(shown[p])},
                )
                rows += found.all()
        now = time.monotonic()
        seen_at.append((now, seen))
        while len(seen_at) > 1 and seen_at[1][0] <= now - settle:
            seen_at.popleft()
        if seen_at[0][0] <= now - settle:  # settled: at or below what a poll saw then
            for p in producers:
                floor[p] = max(floor[p], seen_at[0][1][p])
                shown[p] = {i for i in shown[p] if i > floor[p]}
        return sorted(rows, key=lambda r: (r.occurred_at, r.producer, r.id))

    for row in await unshown():  # what is there already is not new
        shown[row.producer].add(row.id)
    for row in await list_events(engine, filters, limit=10, candidates=candidates):
        shown[row.producer].add(row.id)  # one committed since the line above: shown once
        yield row
    while True:
        await asyncio.sleep(interval)
        for row in await unshown():
            shown[row.producer].add(row.id)
            yield row


# One event of a producer's log by its id (:id, a UUID).
FIND_SQL = (
    f"SELECT '{{producer}}' AS producer, {COLUMNS}, payload FROM {{producer}}.outbox "
    "WHERE event_id = :id"
)


async def find_event(engine: AsyncEngine, event_id: str) -> tuple[Any, Any] | None:
    """(row, payload) of one event by id, from whichever log holds it; None for an id that
    is not a UUID. Found through each log's unique index on the id, not by reading the log."""
    try:
        wanted = UUID(event_id)
    except ValueError:
        return None
    for p in await producers_with_log(engine):
        async with engine.connect() as conn:
            row = (await conn.execute(text(FIND_SQL.format(producer=p)), {"id": wanted})).first()
        if row is not None:
            return row, row.payload
    return None


async def stream_for_replay(
    engine: AsyncEngine, producer: str, filters: Filters, batch: int = 2000
) -> AsyncIterator[Any]:
    """Published events of one producer in publish order, with their stored payload as text."""
    where, params = _where(Filters(**{**filters.__dict__, "published_only": True}))
    last = 0
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT id, event_id, type, version, occurred_at, aggregate_id, "
                        f"correlation_id, causation_id, sequence, payload::text AS payload "
                        f"FROM {producer}.outbox WHERE {where} AND sequence > :last "
                        f"ORDER BY sequence LIMIT :batch"
                    ),
                    {**params, "last": last, "batch": batch},
                )
            ).all()
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].sequence


async def count_for_replay(engine: AsyncEngine, producer: str, filters: Filters) -> dict[str, int]:
    where, params = _where(Filters(**{**filters.__dict__, "published_only": True}))
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT type, count(*) FROM {producer}.outbox WHERE {where} GROUP BY type"),
            params,
        )
        return {r[0]: r[1] for r in rows}
