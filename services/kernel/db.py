"""The one database helper: an engine per service and a unit of work that owns the outbox."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from time import monotonic
from types import TracebackType
from typing import Any, Self
from uuid import UUID, uuid4

import asyncpg
import msgspec
from sqlalchemy import MetaData, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from contracts.envelope import Event
from contracts.timeutil import utcnow
from services.kernel import context
from services.kernel.outbox import messaging_tables


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached; answered as 503."""


class Refused(Exception):
    """A statement sent with the COMMIT (`UnitOfWork.commit(last=...)`) refused its change
    (SQLSTATE P0002, raised by the schema's own functions): nothing was committed. `detail`
    is the function's DETAIL (what it refused)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


# SQLSTATE classes that mean "the database cannot serve us now", not "the request is wrong":
# connection exceptions, too many connections, shutting down, cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


# The driver's own errors (asyncpg.InterfaceError) that say its connection or pool is gone.
# Its others are statements sent wrongly (a wrong number of arguments, a connection used after
# it was given back): a bug of ours, which a retry would repeat for ever, so not an outage.
_CLOSED = ("connection is closed", "connection was closed", "pool is closed", "pool is closing")


def _driver_closed(exc: BaseException) -> bool:
    return any(words in str(exc) for words in _CLOSED)


def _sqlstate(exc: BaseException) -> str:
    """PostgreSQL's SQLSTATE of an error, raised by the driver or by SQLAlchemy around it
    ("" when there is none)."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return str(state or getattr(getattr(orig, "__cause__", None), "sqlstate", "") or "")
    return str(getattr(exc, "sqlstate", "") or "")


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL broke a deadlock by aborting this transaction: none of it was done, and the
    same work tried again goes through once the other transaction has."""
    return _sqlstate(exc) == "40P01"


def is_unavailable(exc: BaseException) -> bool:
    """True when an error means PostgreSQL is unreachable or out of connections (a 503)."""
    if isinstance(exc, DatabaseUnavailable | OSError | ConnectionError):
        return True
    if isinstance(exc, PoolTimeout):  # every pooled connection busy for pool_timeout seconds
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return _driver_closed(exc)
    if isinstance(exc, InterfaceError):  # SQLAlchemy's, around the driver's error if any
        cause = getattr(exc.orig, "__cause__", None)
        driver = cause if isinstance(cause, asyncpg.InterfaceError) else None
        return exc.connection_invalidated or driver is None or _driver_closed(driver)
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate(exc).startswith(_UNAVAILABLE_SQLSTATES)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = _sqlstate(exc)
        cause = getattr(exc.orig, "__cause__", None)
        if state.startswith(_UNAVAILABLE_SQLSTATES) or isinstance(cause, OSError | ConnectionError):
            return True
        return isinstance(exc, OperationalError) and not state
    return False


class Connection(asyncpg.Connection):
    """asyncpg's connection, which can send statements in the same message as the COMMIT of
    its transaction block (`UnitOfWork.commit`): asyncpg commits a block by executing
    "COMMIT;", and this connection prefixes what `send_with_commit` gave it."""

    _with_commit = ""
    _prepared: frozenset[str] = frozenset()

    async def prepared(self, sql: str) -> str:
        """The name of `sql` prepared on this connection's session (PREPARE, once: it
        outlives any transaction), for the messages of literals that `EXECUTE` it: parsed and
        planned once, not in every message."""
        name = _statement_name(sql)
        if name not in self._prepared:
            try:
                await super().execute(f"PREPARE {name} AS {sql}")
            except asyncpg.PostgresError:
                raise  # not prepared
            except BaseException:
                self.terminate()  # prepared or not, nobody knows: never reused
                raise
            self._prepared = self._prepared | {name}
        return name

    def send_with_commit(self, statements: str) -> None:
        self._with_commit = statements

    def sent_with_commit(self) -> bool:
        """Whether the statements given went out (with the COMMIT, or with its failure)."""
        return not self._with_commit

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if not self._with_commit or args or query != "COMMIT;":
            return await super().execute(query, *args, timeout=timeout)  # type: ignore[no-any-return]
        query, self._with_commit = f"{self._with_commit};\nCOMMIT;", ""
        try:
            return await super().execute(query, timeout=timeout)  # type: ignore[no-any-return]
        except asyncpg.PostgresError:
            # A statement failed: the block is aborted and its COMMIT never ran. Ended here,
            # so the connection goes back to the pool outside any transaction.
            if not self.is_closed() and self.is_in_transaction():
                await super().execute("ROLLBACK;")
            raise
        except BaseException:
            if not self.is_closed() and self.is_in_transaction():
                self.terminate()  # cancelled or broken mid-message: never reused
            raise


def _closed_is_replaced(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed while it waited (an outage, a restart, an idle
    timeout) is replaced when the pool lends it, instead of failing its first request with a
    503. The driver saw the close, so this costs no round trip (unlike a pre-ping)."""
    if record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        url,
        # Several services and instances share one PostgreSQL (100 connections by default).
        # The headroom for a burst is kept open once opened: an overflow connection would be
        # closed when given back, so a steady burst opened one per request (a process forked
        # in PostgreSQL, a TLS attempt, every statement prepared again).
        pool_size=pool_size + max(2, pool_size // 2),
        max_overflow=0,
        pool_timeout=30,  # waiting for a busy pool under a burst beats failing the request
        pool_pre_ping=False,
        pool_recycle=1800,
        json_serializer=lambda obj: msgspec.json.encode(obj).decode(),
        json_deserializer=msgspec.json.decode,
        connect_args={"timeout": 5, "command_timeout": 30, "connection_class": Connection},
    )
    event.listen(engine.sync_engine, "checkout", _closed_is_replaced)
    return engine


class Row(asyncpg.Record):
    """A row of a statement sent straight to the driver; its columns read as attributes too,
    as SQLAlchemy's rows do (so one view or rule serves rows of both)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Driver:
    """Statements sent straight to asyncpg on a connection of the engine's pool, for the hot
    paths (a purchase): no SQL building or compiling per call, asyncpg's prepared-statement
    cache, about a fifth of the client CPU of the same statement through SQLAlchemy. Errors
    that mean the database is unreachable become DatabaseUnavailable (503)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    def transaction(self) -> Any:
        """A transaction block (on a connection of `Database.driver()`): committed when the
        block ends, rolled back if it raises."""
        return self.connection.transaction()

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return await self.connection.fetch(sql, *args, record_class=Row)  # type: ignore[no-any-return]
        except Exception as exc:
            raise _translated(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            return await self.connection.fetchrow(sql, *args, record_class=Row)  # type: ignore[no-any-return]
        except Exception as exc:
            raise _translated(exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.connection.fetchval(sql, *args)
        except Exception as exc:
            raise _translated(exc) from exc


def _ours(connection: Any) -> Connection:
    """The driver connection, which must be this module's (the engine of `create_engine`)."""
    if not isinstance(connection, Connection):
        raise RuntimeError("a unit of work needs the engine of services.kernel.db")
    return connection


class _Lender:
    """Connections of the engine's pool lent without an SQLAlchemy connection around them
    (`Database.driver`, `Database.transaction`). One given back healthy is kept for the next
    loan instead of going back through the pool: a checkout and a checkin there cost more
    Python than the statement a loan carries. At most `keep` are kept (the rest of the pool
    stays for SQLAlchemy's connections), none longer than KEEP_S since the pool lent it (the
    pool still recycles them), and none idle for much longer than IDLE_S (a quiet moment gives
    them back)."""

    KEEP_S = 60.0
    IDLE_S = 0.25

    def __init__(self, engine: AsyncEngine, keep: int) -> None:
        self.engine = engine
        self.keep = keep
        self._kept: list[tuple[Any, float, float]] = []  # (fairy, lent by the pool at, idle since)
        self._lent_at: dict[int, float] = {}
        self._trim: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def kept(self) -> int:
        return len(self._kept)

    async def lend(self) -> Any:
        now = monotonic()
        while self._kept:
            fairy, lent_at, _ = self._kept.pop()
            if now - lent_at < self.KEEP_S and _healthy(fairy):
                self._lent_at[id(fairy)] = lent_at
                return fairy
            await self._return(fairy)
        try:
            fairy = await self.engine.raw_connection()
        except Exception as exc:
            raise _translated(exc) from exc
        self._lent_at[id(fairy)] = now
        return fairy

    async def give_back(self, fairy: Any) -> None:
        """Kept or given back to the pool as it was lent, or dropped if it broke or was left
        inside a transaction."""
        lent_at = self._lent_at.pop(id(fairy), 0.0)
        now = monotonic()
        if (
            _healthy(fairy)
            and not self._closed
            and len(self._kept) < self.keep
            and now - lent_at < self.KEEP_S
        ):
            self._kept.append((fairy, lent_at, now))
            if self._trim is None:
                self._trim = asyncio.get_running_loop().call_later(self.IDLE_S, self._trim_idle)
        else:
            await self._return(fairy)

    @staticmethod
    async def _return(fairy: Any) -> None:
        """Back to the pool as it was lent, or dropped if it broke or was left inside a
        transaction."""
        await greenlet_spawn(fairy.close if _healthy(fairy) else fairy.invalidate)

    def _trim_idle(self) -> None:
        """The kept connections idle for IDLE_S back to the pool (the oldest are first)."""
        self._trim = None
        now = monotonic()
        idle = [k for k in self._kept if now - k[2] >= self.IDLE_S]
        self._kept = [k for k in self._kept if now - k[2] < self.IDLE_S]
        for fairy, _, _ in idle:
            _background(self._return(fairy))
        if self._kept:
            self._trim = asyncio.get_running_loop().call_later(self.IDLE_S, self._trim_idle)

    async def close(self) -> None:
        """Every kept connection back to the pool, and none kept from now on."""
        self._closed = True
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        kept, self._kept = self._kept, []
        for fairy, _, _ in kept:
            await self._return(fairy)


def _healthy(fairy: Any) -> bool:
    connection = fairy.driver_connection
    return not connection.is_closed() and not connection.is_in_transaction()


_returning: set[asyncio.Task[None]] = set()


def _background(work: Any) -> None:
    task = asyncio.ensure_future(work)
    _returning.add(task)
    task.add_done_callback(_returning.discard)


def _translated(exc: Exception) -> Exception:
    return DatabaseUnavailable(str(exc)) if is_unavailable(exc) else exc


class Database:
    """A service's handle on its own schema."""

    def __init__(self, url: str, schema: str, metadata: MetaData, pool_size: int = 10) -> None:
        self.schema = schema
        self.metadata = metadata
        self.engine = create_engine(url, pool_size)
        self.lender = _Lender(self.engine, keep=max(1, pool_size // 2))
        # For reads outside a unit of work: no BEGIN/ROLLBACK round trips around a query
        # (each statement still sees one consistent snapshot, as in READ COMMITTED).
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # The same for writes that are single statements (each is its own transaction).
        self.autocommit = self.reader
        self.outbox, self.inbox = messaging_tables(metadata)
        self.write_events_sql = _WRITE_EVENTS.format(schema=schema)
        # Called after every commit that wrote events, so the local relay publishes at once.
        self.on_events_committed: Callable[[], None] = lambda: None
        # Called after every commit (the answer cache forgets what this instance changed).
        self.on_committed: Callable[[], None] = lambda: None

    @property
    def notify_channel(self) -> str:
        return f"outbox_{self.schema}"

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self)

    def transaction(self) -> DriverUnitOfWork:
        """A unit of work whose statements all go to the driver (no `execute`): no
        SQLAlchemy connection around it, and its BEGIN can travel with its first statement
        (`begin_with`). For the purchase path."""
        return DriverUnitOfWork(self)

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Driver]:
        """A pooled connection for single statements (each its own transaction) or a block
        of `Driver.transaction()`. Taken from the engine's pool without an SQLAlchemy
        connection around it (half the client CPU of one), or from those kept for the next
        loan (`_Lender`); kept or given back as it was lent, or dropped if it broke or was
        left inside a transaction."""
        fairy = await self.lender.lend()
        try:
            yield Driver(fairy.driver_connection)
        finally:
            await self.lender.give_back(fairy)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.lender.close()
        await self.engine.dispose()


_WRITE_EVENTS = """
WITH written AS (
  INSERT INTO "{schema}".outbox
    (event_id, type, version, occurred_at, aggregate_id, correlation_id, causation_id, payload)
  SELECT e, t, v, o, a, c, k, CAST(p AS jsonb)
  FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[], $5::text[],
              $6::text[], $7::text[], $8::text[]) AS u(e, t, v, o, a, c, k, p)
  RETURNING 1
)
SELECT pg_notify($9, '')
"""


def sql_text(value: str | None) -> str:
    """A string as an SQL literal, for a connection with standard_conforming_strings on
    (backslashes are plain characters there; a quote is doubled)."""
    if value is None:
        return "NULL"
    if "\x00" in value:
        raise ValueError("text cannot hold NUL characters")
    return "'" + value.replace("'", "''") + "'"


def sql_literal(value: Any) -> str:
    """A value as an SQL literal that becomes the type of the parameter it is given for (an
    argument of EXECUTE): NULL, a boolean, an integer, bytes as `decode(hex)`, anything else
    as quoted text (`sql_text`): a decimal, a string, a time, a UUID, and a list as an array's
    text (`'{1,NULL,"it''s"}'`)."""
    if value is None or isinstance(value, bool):
        return {None: "NULL", True: "TRUE", False: "FALSE"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, bytes):
        return f"decode('{value.hex()}', 'hex')"
    if isinstance(value, list | tuple):
        return sql_text("{" + ",".join(_array_element(v) for v in value) + "}")
    return sql_text(_as_text(value))


def _as_text(value: Any) -> str:
    if isinstance(value, str | Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _array_element(value: Any) -> str:
    """An element of an array's text: NULL, a number, or a quoted string (backslash-escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))
    text = _as_text(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def execute_sql(name: str, args: tuple[Any, ...]) -> str:
    """EXECUTE of a prepared statement with its arguments as literals."""
    if not args:
        return f"EXECUTE {name}"
    return f"EXECUTE {name}({', '.join(sql_literal(arg) for arg in args)})"


@functools.lru_cache(maxsize=512)
def _statement_name(sql: str) -> str:
    return "resellio_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()


def _literals_safe(connection: asyncpg.Connection) -> bool:
    return getattr(connection.get_settings(), "standard_conforming_strings", "") == "on"


def _refusal(exc: BaseException) -> asyncpg.NoDataFoundError | None:
    """The schema function's refusal (P0002) behind an error, however SQLAlchemy wrapped it."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, asyncpg.NoDataFoundError):
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None


class UnitOfWork:
    """One transaction. Rolls back unless `commit()` is called; events go out with the commit."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: list[dict[str, Any]] = []
        self._with_commit: list[str] = []  # statements of literals for the COMMIT's message
        self._conn: AsyncConnection | None = None
        self._driver: Driver | None = None
        self._wrote_events = False
        # The events written to the outbox (id, type), for a caller that waits for them to be
        # handled elsewhere once committed (services.kernel.catchup.CatchUp.handled).
        self.written: list[tuple[UUID, str]] = []
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
        await self._end()
        if exc is not None and not isinstance(exc, DatabaseUnavailable) and is_unavailable(exc):
            raise DatabaseUnavailable(str(exc)) from exc

    async def _end(self) -> None:
        """Roll back unless committed; the connection back to the pool."""
        conn, self._conn, self._driver = self._conn, None, None
        if conn is None:
            return
        try:
            if not self.committed:
                await asyncio.shield(conn.rollback())
        finally:
            await asyncio.shield(conn.close())

    @asynccontextmanager
    async def committed_first(self) -> AsyncIterator[UnitOfWork]:
        """A transaction of its own, committed as the block ends, before this one goes on:
        what must stand even if this one then rolls back, such as a status that stops new
        sales before a handler moves money the processor will not take back. A retry after a
        crash then finds the same state as the first attempt did. Not in a consumer's batch,
        whose work commits together: raises there, so that the batch's events are applied
        one at a time. Its waits for locks end after 2 s (an earlier event of the batch, then
        retried alone, may have held them)."""
        if not self.commit_allowed:
            raise RuntimeError("this work commits on its own: not in a batch")
        async with self.db.unit_of_work() as early:
            await early.execute(text("SET LOCAL lock_timeout = '2s'"))
            yield early
            await early.commit()

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

    async def driver(self) -> Driver:
        """This transaction's connection, for statements sent straight to the driver; they
        run in the same transaction as `execute`'s (and commit or roll back with it)."""
        if self._driver is None:
            adapted = (await self.conn.get_raw_connection()).dbapi_connection
            # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: a
            # transaction that starts with a driver statement has to be begun here.
            if adapted._transaction is None:  # type: ignore[union-attr]
                try:
                    await adapted._start_transaction()  # type: ignore[union-attr]
                except Exception as exc:
                    raise _translated(exc) from exc
            self._driver = Driver(adapted.driver_connection)  # type: ignore[union-attr]
        return self._driver

    async def begin_with(self, sql: str, *args: Any) -> None:
        """The transaction's first statement, whose answer is not needed (see
        DriverUnitOfWork, which sends it in one message with the BEGIN)."""
        await self.fetchval(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await (await self.driver()).fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await (await self.driver()).fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await (await self.driver()).fetchval(sql, *args)

    async def _write_events(self) -> None:
        """The events recorded so far, written to the outbox with the COMMIT (and the
        wake-up for relays listening in other instances, delivered at commit, once per
        transaction however often it is sent)."""
        if not self._events:
            return
        events, self._events = self._events, []
        self.written += [(e["event_id"], e["type"]) for e in events]
        await self.at_commit(
            self.db.write_events_sql,
            [e["event_id"] for e in events],
            [e["type"] for e in events],
            [e["version"] for e in events],
            [e["occurred_at"] for e in events],
            [e["aggregate_id"] for e in events],
            [e["correlation_id"] for e in events],
            [e["causation_id"] for e in events],
            [msgspec.json.encode(e["payload"]).decode() for e in events],
            self.db.notify_channel,
        )
        self._wrote_events = True

    async def insert(self, table: str, *, at_commit: bool = False, **values: str | None) -> None:
        """Insert a row of text values into a table of this schema, now or `at_commit`."""
        target = f'"{self.db.schema}".{table} ({", ".join(values)})'
        places = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        sql = f"INSERT INTO {target} VALUES ({places})"
        await (self.at_commit if at_commit else self.fetchval)(sql, *values.values())

    async def at_commit(self, sql: str, *args: Any) -> None:
        """Run one statement (parameters `$1`...) in the COMMIT's message: for writes nothing
        in this transaction reads before the commit. It is prepared once per connection and
        executed there with its arguments as literals (`sql_literal`), so it must carry no
        secret: PostgreSQL logs the text of a commit message that fails. Where the server
        does not read strings plainly, it runs now, with parameters."""
        connection = _ours((await self.driver()).connection)
        if not _literals_safe(connection):
            await self.fetchval(sql, *args)
            return
        try:
            name = await connection.prepared(sql)
        except Exception as exc:
            raise _translated(exc) from exc
        self._with_commit.append(execute_sql(name, args))

    async def commit(self, last: str = "") -> None:
        """Commit, with the events: the outbox rows, the `at_commit` statements and `last`
        (statements without parameters, ints formatted in by the caller) go in one message
        with the COMMIT (the simple query protocol), so a commit is one round trip. A row
        lock `last` takes, on a row every request wants, is then held only while the server
        commits, not across a round trip to this process and whatever else its loop runs
        meanwhile. If one of them raises
        Refused (SQLSTATE P0002), nothing is committed."""
        if not self.commit_allowed:
            raise RuntimeError("this unit of work is committed by its owner, not here")
        if self._events or self._with_commit or last:
            await self._commit_with(last)
        else:
            await self._send_commit()
        self.committed = True
        self.db.on_committed()
        if self._wrote_events:
            self.db.on_events_committed()

    async def _commit_with(self, last: str) -> None:
        """COMMIT in one message with the outbox rows, the statements given to `at_commit`
        and `last`."""
        await self._write_events()
        connection = _ours((await self.driver()).connection)
        if self._with_commit and not _literals_safe(connection):
            raise RuntimeError("standard_conforming_strings changed in a unit of work")
        statements = ";\n".join(part for part in (*self._with_commit, last) if part)
        self._with_commit = []
        if statements:
            connection.send_with_commit(statements)
        try:
            await self._send_commit()
        except Exception as exc:
            if (refused := _refusal(exc)) is not None:
                raise Refused(str(refused), refused.detail or "") from exc
            if connection.is_closed():  # never given back to the pool
                await asyncio.shield(self._invalidate())
            raise _translated(exc) from exc
        finally:
            sent = connection.sent_with_commit()
            connection.send_with_commit("")  # never left for the pooled connection's next user
        if not sent:
            # asyncpg committed without executing "COMMIT;": the statements never ran.
            raise RuntimeError("the driver committed without the statements sent with it")

    async def _send_commit(self) -> None:
        await self.conn.commit()

    async def _invalidate(self) -> None:
        await self.conn.invalidate()


class DriverUnitOfWork(UnitOfWork):
    """One transaction on a connection of the engine's pool, with every statement sent
    straight to the driver and no SQLAlchemy connection around it (about 80 µs of Python less
    per transaction; `execute` is not available). BEGIN is sent with the first statement that
    needs the transaction, or with `begin_with`'s statement in one message; the COMMIT's
    message is the same as UnitOfWork's. Rolled back unless committed; the connection goes
    back to the pool outside any transaction, or is dropped."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._fairy: Any = None
        self._begun = False

    @property
    def conn(self) -> AsyncConnection:
        raise TypeError("a driver unit of work has no SQLAlchemy connection")

    async def execute(self, statement: Any, params: Any = None) -> Any:
        raise TypeError("a driver unit of work takes SQL for the driver (fetch, fetchval...)")

    async def __aenter__(self) -> Self:
        self._fairy = await self.db.lender.lend()
        self._driver = Driver(self._fairy.driver_connection)
        return self

    async def _end(self) -> None:
        fairy, self._fairy, self._driver = self._fairy, None, None
        if fairy is None:
            return
        connection = fairy.driver_connection
        try:
            if not connection.is_closed() and connection.is_in_transaction():
                await asyncio.shield(connection.execute("ROLLBACK;"))
        except Exception:  # a connection still busy or broken: dropped when given back
            pass
        finally:
            await self.db.lender.give_back(fairy)

    def _connection(self) -> Connection:
        assert self._fairy is not None, "unit of work not entered"
        return _ours(self._fairy.driver_connection)

    async def driver(self) -> Driver:
        if not self._begun:
            self._begun = True
            try:
                await self._connection().execute("BEGIN;")
            except Exception as exc:
                raise _translated(exc) from exc
        assert self._driver is not None
        return self._driver

    async def begin_with(self, sql: str, *args: Any) -> None:
        """The transaction's first statement, whose answer is not needed, in one message with
        the BEGIN (its arguments as literals: no secret); where the server does not read
        strings plainly, or once begun, a statement of its own."""
        connection = self._connection()
        if self._begun or not _literals_safe(connection):
            await self.fetchval(sql, *args)
            return
        try:
            name = await connection.prepared(sql)
            self._begun = True
            await connection.execute(f"BEGIN;\n{execute_sql(name, args)}")
        except Exception as exc:
            raise _translated(exc) from exc

    async def _send_commit(self) -> None:
        if self._begun:  # else nothing was done (what goes with a COMMIT begins it first)
            await self._connection().execute("COMMIT;")

    async def _invalidate(self) -> None:
        """The broken connection is dropped when the unit of work ends."""
