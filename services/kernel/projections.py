"""Rebuilding a service's projections from the producers' event logs.

A service declares in its consumers.py `PROJECTION = Projection(tables={...}, events=[...])`:
the tables that only mirror other services' events, each with the columns in which its
handlers keep the sequence of the event that wrote a row (`newest`), and the event types whose
handlers write nothing but those tables (so replaying them has no other effect: no mail, no
transfer).

A rebuild happens in place: it forgets those sequences (every row may be written again), replays
the events, then deletes the rows no event wrote. The service answers from the old rows until
the replay has written them, never from an emptied table, and an event applied meanwhile keeps
its newer value against the replay's older ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel
from sqlalchemy import ColumnElement, Table, case, func, or_, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.broker import Names
from services.kernel.eventlog import Filters
from services.kernel.replay import consumer_queue, plan, replay
from services.kernel.settings import SERVICES


class NotProjectedYet(Exception):
    """An event about something whose creation has not arrived yet; retried by the consumer."""


def older_than(
    column: ColumnElement[int], sequence: int | ColumnElement[int]
) -> ColumnElement[bool]:
    """A row a `sequence` may change: none yet, or set by an older event (a replayed or retried
    older event applied later leaves a newer one's value)."""
    return or_(column.is_(None), column < sequence)


def newest(
    table: Table, seq: str, sequence: int | ColumnElement[int], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The SET of an update (or upsert) that writes `values` only where they are older than
    `sequence` (the row's `seq` column: the producer's sequence of the event that wrote them),
    and moves `seq` on to the newest seen. Columns one event type writes and another does not
    keep a `seq` column of their own, so that neither event hides the other."""
    fresh = older_than(table.c[seq], sequence)
    changes: dict[str, Any] = {
        name: case((fresh, value), else_=table.c[name]) for name, value in values.items()
    }
    changes[seq] = func.greatest(table.c[seq], sequence)
    return changes


@dataclass(frozen=True)
class Projection:
    tables: Mapping[str, Sequence[str]]  # table -> its sequence columns
    events: Sequence[str]


@dataclass(frozen=True)
class TableState:
    rows: int
    checksum: str


@dataclass
class RebuildReport:
    service: str
    before: dict[str, TableState]
    after: dict[str, TableState]
    replayed: int
    seconds: float  # the whole rebuild: checksums, emptying, replay, waiting
    replay_seconds: float = 0.0  # first event sent -> last event applied

    @property
    def rate(self) -> float:
        """Events per second replayed into the emptied projection."""
        return self.replayed / max(self.replay_seconds, 1e-6)

    @property
    def matches(self) -> bool:
        return self.before == self.after


async def table_states(
    engine: AsyncEngine, schema: str, tables: Sequence[str]
) -> dict[str, TableState]:
    states = {}
    async with engine.connect() as conn:
        for table in tables:
            row = (
                await conn.execute(
                    text(
                        f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                        f'FROM "{schema}"."{table}" AS t'
                    )
                )
            ).one()
            states[table] = TableState(row[0], row[1])
    return states


async def _handled(engine: AsyncEngine, schema: str, events: Sequence[str]) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(f'SELECT count(*) FROM "{schema}".inbox WHERE type = ANY(:t)'),
                {"t": list(events)},
            )
            or 0
        )


async def rebuild(
    engine: AsyncEngine,
    channel: AbstractChannel,
    names: Names,
    service: str,
    projection: Projection,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    timeout_s: float = 600.0,
    candidates: Sequence[str] = SERVICES,
    schema: str | None = None,
) -> RebuildReport:
    """Forget the projection's sequences, replay its events into the service's queue, wait,
    delete the rows no event wrote, compare. Nothing is touched unless the service's queue is
    there and consumed (NoConsumerQueue)."""
    await consumer_queue(channel, names, service, consumed=True)
    started = time.monotonic()
    schema = schema or service
    before = await table_states(engine, schema, list(projection.tables))
    the_plan = await plan(engine, service, list(projection.events), Filters(), candidates)
    async with engine.begin() as conn:
        for table, columns in projection.tables.items():
            forget = ", ".join(f'"{c}" = NULL' for c in columns)
            await conn.execute(text(f'UPDATE "{schema}"."{table}" SET {forget}'))
        await conn.execute(
            text(f'DELETE FROM "{schema}".inbox WHERE type = ANY(:t)'),
            {"t": list(projection.events)},
        )
    replay_started = time.monotonic()
    sent = await replay(
        engine, channel, names, service, list(projection.events), Filters(), candidates=candidates
    )
    deadline = time.monotonic() + timeout_s
    done = 0
    while done < the_plan.total and time.monotonic() < deadline:
        done = await _handled(engine, schema, projection.events)
        on_progress(done, the_plan.total)
        if done < the_plan.total:
            await asyncio.sleep(0.005)
    replay_seconds = time.monotonic() - replay_started
    if done >= the_plan.total:  # what no event wrote again is not the producers'
        async with engine.begin() as conn:
            for table, columns in projection.tables.items():
                unwritten = " AND ".join(f'"{c}" IS NULL' for c in columns)
                await conn.execute(text(f'DELETE FROM "{schema}"."{table}" WHERE {unwritten}'))
    after = await table_states(engine, schema, list(projection.tables))
    return RebuildReport(service, before, after, sent, time.monotonic() - started, replay_seconds)
