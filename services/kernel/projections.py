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
from sqlalchemy import ColumnElement, Table, Update, case, func, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.broker import Names
from services.kernel.db import UnitOfWork
from services.kernel.eventlog import Filters, producers_with_log
from services.kernel.replay import consumer_queue, queue_depth, replay
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


async def change_copied(
    uow: UnitOfWork, change: Update, row: ColumnElement[bool], what: str
) -> bool:
    """Apply `change` to one copied row (`row` names it); whether it changed it. The row not
    there yet (the event came before the one that creates it, which waits for a retry):
    NotProjectedYet, so this event is retried too rather than applied to nothing."""
    if (await uow.execute(change.returning(literal(1)))).first() is not None:
        return True
    if (await uow.execute(select(literal(1)).select_from(change.table).where(row))).first():
        return False
    raise NotProjectedYet(what)


# How long a rebuild waits with nothing applied and the consumer's queue empty before it stops
# (longer than a consumer's retries: what has not come by then was dead-lettered).
STALL_S = 30.0


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
    seconds: float  # the whole rebuild: checksums, forgetting, replay, waiting
    replay_seconds: float = 0.0  # first event sent -> last event applied
    expected: int = 0  # the projection's events in the log when the rebuild began
    applied: int = 0  # of those, applied again before the rebuild stopped waiting

    @property
    def rate(self) -> float:
        """Events per second replayed into the projection."""
        return self.replayed / max(self.replay_seconds, 1e-6)

    @property
    def complete(self) -> bool:
        """Every event the log held was applied again (else the rows no event wrote yet were
        left, and the rows' sequences are back only once the rest are applied)."""
        return self.applied >= self.expected

    @property
    def matches(self) -> bool:
        return self.complete and self.before == self.after


async def table_states(
    engine: AsyncEngine, schema: str, tables: Mapping[str, Sequence[str]]
) -> dict[str, TableState]:
    """Rows and a checksum of each table, its sequence columns left out (bookkeeping of which
    event wrote a row, not what the row says)."""
    states = {}
    async with engine.connect() as conn:
        for table, sequences in tables.items():
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(md5(string_agg(r, '|' ORDER BY r)), '') "
                        f"FROM (SELECT (to_jsonb(t) - CAST(:seq AS text[]))::text AS r "
                        f'FROM "{schema}"."{table}" AS t) AS rows'
                    ),
                    {"seq": list(sequences)},
                )
            ).one()
            states[table] = TableState(row[0], row[1])
    return states


async def _heads(
    conn: AsyncConnection, producers: Sequence[str], events: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Per producer: the newest published sequence among the events, and how many there are."""
    heads = {}
    for producer in producers:
        newest_seq, count = (
            await conn.execute(
                text(
                    f'SELECT max(sequence), count(sequence) FROM "{producer}".outbox '
                    "WHERE type = ANY(:t) AND sequence IS NOT NULL"
                ),
                {"t": list(events)},
            )
        ).one()
        if count:
            heads[producer] = (int(newest_seq), int(count))
    return heads


async def _applied(
    engine: AsyncEngine, schema: str, events: Sequence[str], heads: dict[str, tuple[int, int]]
) -> int:
    """How many of the events up to each producer's head the service has handled since its
    inbox forgot them (live events published since are not counted)."""
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(
                    f'SELECT count(*) FROM "{schema}".inbox AS i '
                    "JOIN unnest(CAST(:p AS text[]), CAST(:h AS bigint[])) AS h(producer, head) "
                    "ON i.producer = h.producer "
                    "WHERE i.type = ANY(:t) AND i.sequence <= h.head"
                ),
                {
                    "p": list(heads),
                    "h": [head for head, _ in heads.values()],
                    "t": list(events),
                },
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
    stall_s: float = STALL_S,
) -> RebuildReport:
    """Forget the projection's sequences, replay its events into the service's queue, wait
    until every one the log held then is applied again, delete the rows no event wrote,
    compare. Nothing is touched unless the service's queue is there and consumed
    (NoConsumerQueue). It stops waiting at `timeout_s`, or once nothing was applied for
    `stall_s` (longer than the consumer's retries) with the queue empty: an event that failed
    again (dead-lettered) would never come."""
    await consumer_queue(channel, names, service, consumed=True)
    started = time.monotonic()
    schema = schema or service
    before = await table_states(engine, schema, projection.tables)
    producers = await producers_with_log(engine, candidates)
    async with engine.begin() as conn:
        # Each producer's relay between batches (its lock, held until we commit): an event a
        # batch sent and the service applied has its sequence committed, so it is below the
        # head read here, and what the relays send after has rows that keep their sequences.
        for producer in sorted(producers):
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"relay:{producer}"}
            )
        for table, columns in projection.tables.items():
            forget = ", ".join(f'"{c}" = NULL' for c in columns)
            await conn.execute(text(f'UPDATE "{schema}"."{table}" SET {forget}'))
        await conn.execute(
            text(f'DELETE FROM "{schema}".inbox WHERE type = ANY(:t)'),
            {"t": list(projection.events)},
        )
        # Read after forgetting: every row forgotten was written by an event up to these heads.
        heads = await _heads(conn, producers, projection.events)
    expected = sum(count for _, count in heads.values())
    replay_started = time.monotonic()
    sent = await replay(
        engine, channel, names, service, list(projection.events), Filters(), candidates=candidates
    )
    deadline = time.monotonic() + timeout_s
    done, moved = 0, time.monotonic()
    while done < expected and time.monotonic() < deadline:
        asked = time.monotonic()
        now_done = await _applied(engine, schema, projection.events, heads)
        counting = time.monotonic() - asked  # it reads the inbox: on a big one, ask less often
        if now_done != done:
            done, moved = now_done, time.monotonic()
        on_progress(done, expected)
        if done >= expected:
            break
        if time.monotonic() - moved > stall_s and not await queue_depth(channel, names, service):
            break
        await asyncio.sleep(max(0.01, 4 * counting))
    replay_seconds = time.monotonic() - replay_started
    if done >= expected:  # what no event wrote again is not the producers'
        async with engine.begin() as conn:
            for table, columns in projection.tables.items():
                unwritten = " AND ".join(f'"{c}" IS NULL' for c in columns)
                await conn.execute(text(f'DELETE FROM "{schema}"."{table}" WHERE {unwritten}'))
    after = await table_states(engine, schema, projection.tables)
    seconds = time.monotonic() - started
    return RebuildReport(service, before, after, sent, seconds, replay_seconds, expected, done)
