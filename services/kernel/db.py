"""The one database helper: an engine per service and a unit of work that owns the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self
from uuid import uuid4

import msgspec
from sqlalchemy import MetaData, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from contracts.envelope import Event
from contracts.timeutil import utcnow
from services.kernel import context
from services.kernel.outbox import messaging_tables


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached; answered as 503."""


# SQLSTATE classes that mean "the database cannot serve us now", not "the request is wrong":
# connection exceptions, too many connections, shutting down, cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """True when an error means PostgreSQL is unreachable or out of connections (a 503)."""
    if isinstance(exc, DatabaseUnavailable | OSError | ConnectionError | InterfaceError):
        return True
    if isinstance(exc, PoolTimeout):  # every pooled connection busy for pool_timeout seconds
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        cause = getattr(orig, "__cause__", None)
        state = state or str(getattr(cause, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_SQLSTATES) or isinstance(cause, OSError | ConnectionError):
            return True
        return isinstance(exc, OperationalError) and not state
    return False


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        # Several services and instances share one PostgreSQL (100 connections by default).
        max_overflow=max(2, pool_size // 2),
        pool_timeout=30,  # waiting for a busy pool under a burst beats failing the request
        pool_pre_ping=False,
        pool_recycle=1800,
        json_serializer=lambda obj: msgspec.json.encode(obj).decode(),
        json_deserializer=msgspec.json.decode,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


class Database:
    """A service's handle on its own schema."""

    def __init__(self, url: str, schema: str, metadata: MetaData, pool_size: int = 10) -> None:
        self.schema = schema
        self.metadata = metadata
        self.engine = create_engine(url, pool_size)
        # For reads outside a unit of work: no BEGIN/ROLLBACK round trips around a query
        # (each statement still sees one consistent snapshot, as in READ COMMITTED).
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # The same for writes that are single statements (each is its own transaction).
        self.autocommit = self.reader
        self.outbox, self.inbox = messaging_tables(metadata)
        # Called after every commit that wrote events, so the local relay publishes at once.
        self.on_events_committed: Callable[[], None] = lambda: None
        # Called after every commit (the answer cache forgets what this instance changed).
        self.on_committed: Callable[[], None] = lambda: None

    @property
    def notify_channel(self) -> str:
        return f"outbox_{self.schema}"

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


_WRITE_EVENTS = """
WITH written AS (
  INSERT INTO "{schema}".outbox
    (event_id, type, version, occurred_at, aggregate_id, correlation_id, causation_id, payload)
  SELECT e, t, v, o, a, c, k, CAST(p AS jsonb)
  FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:versions AS integer[]),
              CAST(:occurred AS timestamptz[]), CAST(:aggregates AS text[]),
              CAST(:correlations AS text[]), CAST(:causations AS text[]),
              CAST(:payloads AS text[])) AS u(e, t, v, o, a, c, k, p)
  RETURNING 1
)
SELECT pg_notify(:channel, '')
"""


class UnitOfWork:
    """One transaction. Rolls back unless `commit()` is called; events go out with the commit."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: list[dict[str, Any]] = []
        self._conn: AsyncConnection | None = None
        self._wrote_events = False
        self.committed = False
        # False while a consumer applies a batch of events: each handler's work must commit
        # with the batch, never on its own.
        self.commit_allowed = True

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None, "unit of work not entered"
        return self._conn

    async def __aenter__(self) -> Self:
        try:
            self._conn = await self.db.engine.connect()
            await self._conn.begin()
        except Exception as exc:
            if self._conn is not None:
                await self._conn.close()
            if is_unavailable(exc):
                raise DatabaseUnavailable(str(exc)) from exc
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self.committed:
                await asyncio.shield(conn.rollback())
        finally:
            await asyncio.shield(conn.close())
        if exc is not None and not isinstance(exc, DatabaseUnavailable) and is_unavailable(exc):
            raise DatabaseUnavailable(str(exc)) from exc

    def emit(self, event: Event, aggregate_id: object) -> None:
        """Record an event; it is written to the outbox in this transaction."""
        self._events.append(
            {
                "event_id": uuid4(),
                "type": event.TYPE,
                "version": event.VERSION,
                "occurred_at": utcnow(),
                "aggregate_id": str(aggregate_id),
                "correlation_id": context.correlation_id.get(),
                "causation_id": context.causation_id.get(),
                "payload": msgspec.to_builtins(event),
            }
        )

    async def execute(self, statement: Any, params: Any = None) -> Any:
        return await self.conn.execute(statement, params)

    async def write_events(self) -> None:
        """Write the events recorded so far to the outbox now (commit writes any later ones).
        A use case that ends on a contended row lock calls this first, so that nothing but
        the COMMIT runs while it holds the lock."""
        if not self._events:
            return
        events, self._events = self._events, []
        # One round trip: the rows, and the wake-up for relays listening in other instances
        # (delivered at commit, once per transaction however often it is sent).
        await self.conn.execute(
            text(_WRITE_EVENTS.format(schema=self.db.schema)),
            {
                "ids": [e["event_id"] for e in events],
                "types": [e["type"] for e in events],
                "versions": [e["version"] for e in events],
                "occurred": [e["occurred_at"] for e in events],
                "aggregates": [e["aggregate_id"] for e in events],
                "correlations": [e["correlation_id"] for e in events],
                "causations": [e["causation_id"] for e in events],
                "payloads": [msgspec.json.encode(e["payload"]).decode() for e in events],
                "channel": self.db.notify_channel,
            },
        )
        self._wrote_events = True

    async def commit(self) -> None:
        if not self.commit_allowed:
            raise RuntimeError("this unit of work is committed by its owner, not here")
        await self.write_events()
        await self.conn.commit()
        self.committed = True
        self.db.on_committed()
        if self._wrote_events:
            self.db.on_events_committed()
