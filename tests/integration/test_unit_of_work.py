"""The unit of work's statements sent straight to the driver are part of its transaction:
they commit with it, roll back with it, and share it with statements sent through SQLAlchemy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url

from contracts.ordering import OrderFailed
from services.kernel import context
from services.kernel.db import (
    Database,
    DatabaseUnavailable,
    Refused,
    UnitOfWork,
    _Lender,
    _statement_name,
)
from tests.integration.conftest import drop_schema
from tests.support.faults import CuttableProxy


@pytest.fixture
async def db(integration_db_url: str, schema_name: str) -> AsyncIterator[Database]:
    database = Database(integration_db_url, schema_name, MetaData(schema=schema_name), 2)
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema_name}"')
        await conn.exec_driver_sql(f'CREATE TABLE "{schema_name}".notes (body text)')
    yield database
    await drop_schema(database.engine, schema_name)
    await database.dispose()


@pytest.fixture(params=["unit_of_work", "transaction"])
def begin(request: pytest.FixtureRequest, db: Database) -> Callable[[], UnitOfWork]:
    """Either kind of unit of work: SQLAlchemy's connection around the driver, or the driver
    alone (`Database.transaction`); both commit, refuse and roll back alike."""
    return getattr(db, request.param)  # type: ignore[no-any-return]


async def notes(db: Database) -> list[str]:
    async with db.driver() as conn:
        return [r.body for r in await conn.fetch(f'SELECT body FROM "{db.schema}".notes')]


async def test_driver_statements_roll_back_unless_committed(
    db: Database, begin: Callable[[], UnitOfWork]
) -> None:
    async with begin() as uow:
        await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('lost')")
        await uow.insert("notes", at_commit=True, body="lost with it")
    async with begin() as uow:
        await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('kept')")
        await uow.insert("notes", at_commit=True, body="kept with it")
        await uow.commit()
    assert sorted(await notes(db)) == ["kept", "kept with it"]


async def test_driver_and_sqlalchemy_statements_share_one_transaction(db: Database) -> None:
    insert = f'INSERT INTO "{db.schema}".notes VALUES ($1)'
    for first_driver in (True, False):
        async with db.unit_of_work() as uow:
            if first_driver:
                ours = await uow.fetchval("SELECT txid_current()")
                theirs = (await uow.execute(text("SELECT txid_current()"))).scalar()
            else:
                theirs = (await uow.execute(text("SELECT txid_current()"))).scalar()
                ours = await uow.fetchval("SELECT txid_current()")
            assert ours == theirs
            await uow.fetchval(insert, f"both-{first_driver}")
            await uow.execute(
                text(f'INSERT INTO "{db.schema}".notes VALUES (:b)'), {"b": f"sa-{first_driver}"}
            )
        # Rolled back together: neither statement is left.
        assert await notes(db) == []


async def test_driver_rows_read_by_name_and_attribute(
    db: Database, begin: Callable[[], UnitOfWork]
) -> None:
    async with begin() as uow:
        row = await uow.fetchrow("SELECT 7 AS seven, 'x' AS letter")
    assert row is not None
    assert (row.seven, row["letter"]) == (7, "x")
    with pytest.raises(AttributeError):
        _ = row.missing


async def _refusing_function(db: Database) -> str:
    """A function that refuses (SQLSTATE P0002) unless given a positive number."""
    name = f'"{db.schema}".take'
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            f"CREATE FUNCTION {name}(n integer) RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO \"{db.schema}\".notes VALUES ('taken ' || n); "
            "IF n <= 0 THEN RAISE EXCEPTION USING ERRCODE = 'no_data_found', "
            "MESSAGE = 'refused', DETAIL = n::text; END IF; END $$"
        )
    return name


async def test_statements_sent_with_the_commit_commit_with_the_transaction(
    db: Database, begin: Callable[[], UnitOfWork]
) -> None:
    take = await _refusing_function(db)
    async with begin() as uow:
        await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('before')")
        await uow.commit(last=f"SELECT {take}(1); SELECT {take}(2)")
    assert sorted(await notes(db)) == ["before", "taken 1", "taken 2"]
    # The connection went back to the pool outside any transaction, and serves the next one.
    async with begin() as uow:
        await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('after')")
        await uow.commit()
    assert len(await notes(db)) == 4


async def test_a_refusal_sent_with_the_commit_commits_nothing(
    db: Database, begin: Callable[[], UnitOfWork]
) -> None:
    take = await _refusing_function(db)
    with pytest.raises(Refused) as refused:
        async with begin() as uow:
            await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('before')")
            await uow.commit(last=f"SELECT {take}(1); SELECT {take}(0); SELECT {take}(3)")
    assert refused.value.detail == "0"
    assert not uow.committed
    assert await notes(db) == []
    # Refusals leave every pooled connection fit for the next transaction.
    for n in range(6):
        with pytest.raises(Refused):
            async with begin() as uow:
                await uow.commit(last=f"SELECT {take}(0)")
        async with begin() as uow:
            await uow.fetchval(f'INSERT INTO "{db.schema}".notes VALUES ($1)', f"after {n}")
            await uow.commit()
    assert len(await notes(db)) == 6


async def test_a_commit_is_one_message_with_its_events_and_last_statements(
    db: Database, begin: Callable[[], UnitOfWork], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox rows, the statements given and the COMMIT travel together: one round trip."""
    take = await _refusing_function(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(db.metadata.create_all)
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def recorded(self: asyncpg.Connection, query: str, *args: object, **kw: Any) -> str:
        sent.append(query)
        return await execute(self, query, *args, **kw)  # type: ignore[no-any-return]

    async with begin() as uow:
        await uow.fetchval(f"INSERT INTO \"{db.schema}\".notes VALUES ('before')")
        uow.emit(OrderFailed(order_id=1, user_id=2, reason="payment_declined"), aggregate_id=1)
        await uow.insert("notes", at_commit=True, body="with the commit")
        monkeypatch.setattr(asyncpg.Connection, "execute", recorded)
        await uow.commit(last=f"SELECT {take}(1)")
        monkeypatch.undo()
    assert uow.committed
    # A statement is prepared once per connection; the commit itself is one message.
    [message] = [m for m in sent if not m.startswith("PREPARE ")]
    assert f"EXECUTE {_statement_name(db.write_events_sql)}(" in message
    assert f"{take}(1)" in message and message.endswith("COMMIT;")
    assert sorted(await notes(db)) == ["before", "taken 1", "with the commit"]
    async with db.driver() as conn:
        assert await conn.fetchval(f'SELECT type FROM "{db.schema}".outbox') == OrderFailed.TYPE


async def test_a_connection_lost_in_the_commit_message_is_never_reused(
    db: Database, begin: Callable[[], UnitOfWork], monkeypatch: pytest.MonkeyPatch
) -> None:
    execute = asyncpg.Connection.execute

    async def lost(self: asyncpg.Connection, query: str, *args: object, **kw: Any) -> str:
        if query.endswith("COMMIT;") and query != "COMMIT;":
            raise ConnectionResetError("connection lost")
        return await execute(self, query, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(asyncpg.Connection, "execute", lost)
    with pytest.raises(DatabaseUnavailable):
        async with begin() as uow:
            await uow.insert("notes", at_commit=True, body="in the lost message")
            await uow.commit()
    assert not uow.committed
    monkeypatch.undo()
    for n in range(4):  # every pooled connection serves: the lost one was dropped
        async with begin() as uow:
            await uow.fetchval(f'INSERT INTO "{db.schema}".notes VALUES ($1)', f"next {n}")
            await uow.commit()
    assert len(await notes(db)) == 4


NASTY = "it's \\' a \\\\ ''; DROP TABLE x; -- \u00e9\u4e2d\U0001f3ab\n$$ $q$ \"quoted\""


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_events_and_rows_written_at_the_commit_keep_any_text_exactly(
    db: Database, begin: Callable[[], UnitOfWork], conforming: str
) -> None:
    """Sent as literals with the COMMIT when the server reads them plainly
    (standard_conforming_strings on), as parameters otherwise: the same rows either way."""
    async with db.engine.begin() as conn:
        await conn.run_sync(db.metadata.create_all)
    token = context.correlation_id.set(NASTY)
    try:
        async with begin() as uow:
            await uow.fetchval(f"SET LOCAL standard_conforming_strings = {conforming}")
            uow.emit(OrderFailed(order_id=1, user_id=2, reason=NASTY), aggregate_id=NASTY)
            await uow.insert("notes", at_commit=True, body=NASTY)
            await uow.commit()
    finally:
        context.correlation_id.reset(token)
    async with db.driver() as conn:
        row = await conn.fetchrow(
            f'SELECT aggregate_id, correlation_id, payload::text AS payload FROM "{db.schema}".outbox'
        )
    assert row is not None
    assert (row.aggregate_id, row.correlation_id) == (NASTY, NASTY)
    assert msgspec.json.decode(row.payload)["reason"] == NASTY
    assert await notes(db) == [NASTY]


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_statements_run_at_the_commit_keep_every_kind_of_value(
    db: Database, begin: Callable[[], UnitOfWork], conforming: str
) -> None:
    """`at_commit`'s arguments as literals in the COMMIT's message (or as parameters, where
    the server does not read strings plainly): every kind a statement takes arrives intact,
    arrays and NULLs included, and `$1` stays apart from `$10`."""
    values: list[Any] = [
        NASTY,
        None,
        True,
        -(2**62),
        Decimal("-12345.67"),
        datetime(2026, 11, 26, 12, 30, 45, 123456, tzinfo=UTC),
        UUID("12345678-1234-5678-1234-567812345678"),
        b"\x00'\\\xff",
        [1, None, 3],
        [NASTY, None],
    ]
    columns = "s text, n text, b boolean, i bigint, d numeric, t timestamptz, u uuid, "
    columns += "y bytea, ia bigint[], sa text[]"
    places = "$1, $2, $3, $4, $5, $6, $7, $8, $9::bigint[], $10::text[]"
    async with begin() as uow:
        await uow.fetchval(f'CREATE TABLE "{db.schema}".kinds ({columns})')
        await uow.fetchval(f"SET LOCAL standard_conforming_strings = {conforming}")
        await uow.at_commit(f'INSERT INTO "{db.schema}".kinds VALUES ({places})', *values)
        await uow.commit()
    async with db.driver() as conn:
        row = await conn.fetchrow(f'SELECT * FROM "{db.schema}".kinds')
    assert row is not None
    assert list(row.values()) == values


async def test_a_burst_leaves_its_connections_open_for_the_next_one(db: Database) -> None:
    """The pool's headroom is kept once opened: a burst that needs every connection does not
    close (and the next one reopen) a connection per request."""
    ceiling = 4  # the fixture's pool of 2, with its headroom of 2
    all_in = asyncio.Event()
    holding = 0

    async def use() -> None:
        nonlocal holding
        async with db.driver() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            holding += 1
            if holding == ceiling:
                all_in.set()
            await all_in.wait()

    await asyncio.wait_for(asyncio.gather(*(use() for _ in range(ceiling))), 10)
    # Open, in the pool or kept for the next loan.
    assert db.engine.pool.checkedin() + db.lender.kept == ceiling  # type: ignore[attr-defined]


async def test_a_connection_given_back_is_kept_for_the_next_loan_for_a_moment(
    db: Database,
) -> None:
    """A loan without SQLAlchemy around it skips the pool's checkout and checkin while a
    connection given back is kept: at most half the pool (the rest stays for SQLAlchemy's
    connections), back in the pool after a quiet moment; one left in a transaction is
    dropped."""
    pool = db.engine.pool
    async with db.driver() as conn:
        first = conn.connection
    assert db.lender.kept == 1 and pool.checkedout() == 1  # type: ignore[attr-defined]
    async with db.driver() as conn:
        assert conn.connection is first  # lent again, not through the pool
    async with db.driver(), db.driver(), db.driver():
        pass
    assert db.lender.kept == 1 and pool.checkedout() == 1  # type: ignore[attr-defined]
    await asyncio.sleep(_Lender.IDLE_S * 3)
    assert db.lender.kept == 0 and pool.checkedout() == 0  # type: ignore[attr-defined]
    async with db.driver() as conn:
        await conn.connection.execute("BEGIN")
    assert db.lender.kept == 0 and pool.checkedout() == 0  # type: ignore[attr-defined]
    async with db.driver() as conn:
        assert not conn.connection.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_driver_transaction_begins_with_its_first_statement_in_one_message(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Database.transaction`: the BEGIN travels with `begin_with`'s statement, the COMMIT
    with what goes with it: a transaction of one write is two round trips. Rolled back
    unless committed; a failed statement leaves the connection fit for the next user."""
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def recorded(self: asyncpg.Connection, query: str, *args: object, **kw: Any) -> str:
        sent.append(query)
        return await execute(self, query, *args, **kw)  # type: ignore[no-any-return]

    insert = f'INSERT INTO "{db.schema}".notes VALUES ($1)'
    monkeypatch.setattr(asyncpg.Connection, "execute", recorded)
    async with db.transaction() as uow:
        await uow.begin_with(insert, "it's first")
        await uow.insert("notes", at_commit=True, body="last")
        await uow.commit()
    monkeypatch.undo()
    first = _statement_name(insert)
    last = _statement_name(f'INSERT INTO "{db.schema}".notes (body) VALUES ($1)')
    assert [m for m in sent if not m.startswith("PREPARE ")] == [
        f"BEGIN;\nEXECUTE {first}('it''s first')",
        f"EXECUTE {last}('last');\nCOMMIT;",
    ]
    async with db.transaction() as uow:
        await uow.begin_with(insert, "rolled back")
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with db.transaction() as uow:
            await uow.fetchval(insert, "failed with the next")
            await uow.fetchval("SELECT 1 / 0")
    with pytest.raises(TypeError):
        async with db.transaction() as uow:
            await uow.execute(text("SELECT 1"))
    for n in range(4):  # every pooled connection serves, outside any transaction
        async with db.transaction() as uow:
            await uow.begin_with(insert, f"next {n}")
            await uow.commit()
    assert sorted(await notes(db)) == ["it's first", "last", *(f"next {n}" for n in range(4))]


async def test_a_statement_at_the_commit_is_prepared_once_per_connection(
    db: Database, begin: Callable[[], UnitOfWork], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What goes with a COMMIT is prepared on the connection the first time (it outlives a
    rolled-back transaction) and only executed afterwards."""
    sent: list[tuple[int, str]] = []
    execute = asyncpg.Connection.execute

    async def recorded(self: asyncpg.Connection, query: str, *args: object, **kw: Any) -> str:
        sent.append((id(self), query))
        return await execute(self, query, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(asyncpg.Connection, "execute", recorded)
    for n in range(8):
        async with begin() as uow:
            await uow.insert("notes", at_commit=True, body=f"note {n}")
            if n % 2:
                await uow.commit()
    monkeypatch.undo()
    prepared = [conn for conn, query in sent if query.startswith("PREPARE ")]
    assert prepared and len(prepared) == len(set(prepared))  # once per connection
    assert sum(query.startswith("EXECUTE ") for _, query in sent) == 4
    assert sorted(await notes(db)) == [f"note {n}" for n in (1, 3, 5, 7)]


async def test_connections_the_server_dropped_while_pooled_are_never_lent(
    integration_db_url: str, schema_name: str
) -> None:
    """After an outage, the first request on each connection the pool kept is not a 503: a
    connection the driver saw closed while it sat in the pool (or was kept for the next loan)
    is replaced by a new one, without a round trip to find out."""
    url = make_url(integration_db_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    database = Database(proxied, schema_name, MetaData(schema=schema_name), 2)
    try:

        async def used_at_once() -> None:
            async with database.driver() as conn:
                await conn.fetchval("SELECT 1")
                await asyncio.sleep(0.05)

        await asyncio.gather(*(used_at_once() for _ in range(3)))  # the pool holds several
        async with database.driver() as conn:  # and the lender keeps one for the next loan
            assert await conn.fetchval("SELECT 2") == 2
        await asyncio.to_thread(proxy.cut)
        await asyncio.sleep(0.2)  # the driver sees each connection closed
        await asyncio.to_thread(proxy.restore)
        for n in range(4):
            async with database.driver() as conn:
                assert await conn.fetchval("SELECT $1::int", n) == n
            async with database.transaction() as uow:
                assert await uow.fetchval("SELECT $1::int", n) == n
            async with database.unit_of_work() as uow:
                assert await uow.fetchval("SELECT $1::int", n) == n
    finally:
        await database.dispose()
        await asyncio.to_thread(proxy.stop)
