"""Test helpers for selling: a venue, an approved event with tickets on sale, a bought ticket.

Everything goes through the gateway like a real client (catalog for events, ordering for carts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.actors import Account, bearer, unique
from tests.support.system import System


@dataclass
class OnSale:
    event_id: int
    type_id: int
    name: str
    organizer: Account


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


async def location(api: httpx.AsyncClient, admin: str) -> int:
    response = await api.post(
        "/api/locations",
        json={"name": unique("Hall "), "address": "1 Main St", "city": "Gdansk", "country": "PL"},
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    return int(response.json()["location_id"])


async def create_event(
    api: httpx.AsyncClient,
    admin: str,
    organizer: Account,
    *,
    tickets: int = 100,
    price: float = 50.0,
    sales_start: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> OnSale:
    """A pending event with its standard ticket type."""
    now = datetime.now(UTC)
    start = start or now + timedelta(days=30)
    body: dict[str, Any] = {
        "name": unique("Concert "),
        "description": "A night out",
        "start_date": iso(start),
        "end_date": iso(end or start + timedelta(hours=3)),
        "location_id": await location(api, admin),
        "total_tickets": tickets,
        "standard_ticket_price": price,
        "ticket_sales_start": iso(sales_start or now - timedelta(days=1)),
    }
    response = await api.post("/api/events", json=body, headers=organizer.headers)
    assert response.status_code == 200, response.text
    event_id = int(response.json()["event_id"])
    types = await api.get(
        "/api/ticket-types", params={"event_id": event_id}, headers=organizer.headers
    )
    assert types.status_code == 200, types.text
    return OnSale(event_id, int(types.json()[0]["type_id"]), body["name"], organizer)


async def approve(api: httpx.AsyncClient, admin: str, event_id: int) -> None:
    response = await api.post(f"/api/events/authorize/{event_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text


async def event_on_sale(
    api: httpx.AsyncClient, admin: str, organizer: Account, **kwargs: Any
) -> OnSale:
    event = await create_event(api, admin, organizer, **kwargs)
    await approve(api, admin, event.event_id)
    return event


async def add(
    api: httpx.AsyncClient, buyer: Account, type_id: int, quantity: int = 1, **headers: str
) -> httpx.Response:
    return await api.post(
        "/api/cart/items",
        json={"ticket_type_id": type_id, "quantity": quantity},
        headers={**buyer.headers, **headers},
    )


async def buy(
    api: httpx.AsyncClient, buyer: Account, type_id: int, quantity: int = 1
) -> list[dict[str, Any]]:
    """Add to cart and check out; the buyer's valid tickets of that type afterwards."""
    response = await add(api, buyer, type_id, quantity)
    assert response.status_code == 200, response.text
    response = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert response.status_code == 200, response.text
    mine = await api.get("/api/tickets", params={"type_id": type_id}, headers=buyer.headers)
    assert mine.status_code == 200, mine.text
    return mine.json()  # type: ignore[no-any-return]


async def ticket_type(
    api: httpx.AsyncClient, organizer: Account, event_id: int, **fields: Any
) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "max_count": 10,
        "price": 20,
        "currency": "USD",
        "available_from": iso(datetime.now(UTC) - timedelta(days=1)),
        "description": unique("VIP "),
        **fields,
    }
    response = await api.post("/api/ticket-types", json=body, headers=organizer.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def available(api: httpx.AsyncClient, event_id: int, type_id: int) -> int | None:
    """What the public event page says is left of a ticket type (ordering's availability)."""
    response = await api.get(f"/api/events/{event_id}")
    assert response.status_code == 200, response.text
    for tt in response.json()["ticket_types"]:
        if tt["type_id"] == type_id:
            return tt["available"]  # type: ignore[no-any-return]
    return None


_engines: dict[str, AsyncEngine] = {}


async def db_rows(system: System, sql: str, **params: Any) -> list[Any]:
    """Read the running system's database (tests only: ticket codes, the payment ledger)."""
    engine = _engines.get(system.database_url)
    if engine is None:
        engine = _engines[system.database_url] = create_async_engine(
            system.database_url, poolclass=NullPool
        )
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


def driver_dsn(system: System) -> str:
    """The running system's database for a plain asyncpg connection (a test's own locks)."""
    url = make_url(system.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@asynccontextmanager
async def holding(system: System, sql: str, *args: Any) -> AsyncIterator[None]:
    """A transaction of the test's own, on a connection of its own, that ran `sql` and holds
    its locks while the block runs; committed when the block ends."""
    conn = await asyncpg.connect(driver_dsn(system))
    try:
        async with conn.transaction():
            await conn.execute(sql, *args)
            yield
    finally:
        await conn.close()


async def waiting_for_lock(
    system: System, query_like: str, running: asyncio.Future[Any], waiters: int = 1
) -> None:
    """Return once `waiters` backends wait for a lock in a statement LIKE `query_like`; fail
    if `running` ends first."""
    await lock_waited_for(driver_dsn(system), query_like, running, waiters)


async def lock_waited_for(
    dsn: str, query_like: str, running: asyncio.Future[Any], waiters: int = 1
) -> None:
    """`waiting_for_lock` on the database at `dsn` (a plain asyncpg DSN). Read on a connection
    of its own, outside any transaction: inside one, PostgreSQL shows the same view of
    pg_stat_activity on every look."""
    watcher = await asyncpg.connect(dsn)
    try:
        for _ in range(500):
            if (
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND query LIKE $1",
                    query_like,
                )
                >= waiters
            ):
                return
            assert not running.done(), running.result()
            await asyncio.sleep(0.01)
        waiting = await watcher.fetch(
            "SELECT wait_event_type, wait_event, left(query, 300) AS q FROM pg_stat_activity"
            " WHERE state <> 'idle'"
        )
        raise AssertionError(f"nothing waited for a lock in {query_like!r}: {waiting}")
    finally:
        await watcher.close()


async def ticket_code(system: System, ticket_id: int) -> str:
    rows = await db_rows(
        system, "SELECT code FROM ordering.tickets WHERE ticket_id = :t", t=ticket_id
    )
    return str(rows[0].code)


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Poll an async check until it returns something truthy (effects that travel as events)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)
