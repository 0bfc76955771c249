"""Reading the event log: every service's outbox rows, kept after publishing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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


# The ids a follower reads again (`follow_events`): from the oldest of the events that occurred
# in the last :settle seconds, or past the log's end when none did.
_FOLLOW_FROM = (
    "SELECT coalesce((SELECT min(id) - 1 FROM {p}.outbox WHERE occurred_at >= now() - "
    "make_interval(secs => :settle)), (SELECT coalesce(max(id), 0) FROM {p}.outbox))"
)


async def follow_events(
    engine: AsyncEngine,
    filters: Filters,
    interval: float = 0.5,
    settle_s: float = 10.0,
    candidates: Sequence[str] = SERVICES,
) -> AsyncIterator[Any]:
    """The last ten events, then each event once, as it is committed. An event's id is drawn
    when its transaction inserts it, and that transaction may commit after one holding a later
    id: each poll reads again the ids of the events that occurred in the last `settle_s`
    seconds and leaves out those shown, so one is missed only if its transaction took longer
    than that (a service's transactions take milliseconds)."""
    logs = await producers_with_log(engine, candidates)
    producers = [p for p in logs if filters.producer in (None, p)]
    where, params = _where(filters)
    shown: dict[str, set[int]] = {p: set() for p in producers}

    async def committed_since_floor() -> list[Any]:
        rows: list[Any] = []
        async with engine.connect() as conn:
            for p in producers:
                floor = await conn.scalar(text(_FOLLOW_FROM.format(p=p)), {"settle": settle_s})
                shown[p] = {i for i in shown[p] if i > floor}
                found = await conn.execute(
                    text(
                        f"SELECT '{p}' AS producer, {COLUMNS} FROM {p}.outbox WHERE {where} "
                        "AND id > :floor AND NOT (id = ANY(:shown)) ORDER BY id"
                    ),
                    {**params, "floor": floor, "shown": sorted(shown[p])},
                )
                rows += found.all()
        return sorted(rows, key=lambda r: (r.occurred_at, r.producer, r.id))

    for row in await committed_since_floor():  # what is there already is not new
        shown[row.producer].add(row.id)
    for row in await list_events(engine, filters, limit=10, candidates=candidates):
        yield row
    while True:
        await asyncio.sleep(interval)
        for row in await committed_since_floor():
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
