"""The ticket drop: 200 customers race for 50 tickets through the gateway, with two ordering
instances behind it. Exactly 50 tickets exist afterwards, every other buyer got R4, and sold +
held never exceeded the capacity at any moment (sampled while the race ran)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.actors import (
    Account,
    activate_by_admin,
    admin_token,
    register_customer,
    verified_organizer,
)
from tests.support.shop import add, db_rows, event_on_sale
from tests.support.system import System, running

INVENTORY = text("SELECT sold, held, max_count FROM ordering.ticket_types WHERE type_id = :t")
CUSTOMERS = 200
CAPACITY = 50


@pytest.fixture(scope="module")
def two_instances() -> Iterator[System]:
    # Small pools: seven processes share one PostgreSQL with the other suites on this machine.
    with running({"RESELLIO_DB_POOL_SIZE": "5"}, instances={"ordering": 2}) as system:
        yield system


@pytest.fixture(scope="module")
async def gateway(two_instances: System) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=two_instances.gateway_url, timeout=60, limits=limits
    ) as client:
        yield client


async def customers(api: httpx.AsyncClient, admin: str, n: int) -> list[Account]:
    gate = asyncio.Semaphore(16)

    async def one() -> Account:
        async with gate:
            return await activate_by_admin(api, admin, await register_customer(api))

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def ordering_requests(system: System) -> list[float]:
    """How many POSTs each ordering instance answered (from its own /metrics)."""
    counts = []
    async with httpx.AsyncClient() as client:
        for _, port in system.instances("ordering"):
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            counts.append(
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("resellio_http_requests_total") and 'method="POST"' in line
                )
            )
    return counts


async def test_200_customers_race_for_50_tickets_on_two_instances(
    gateway: httpx.AsyncClient, two_instances: System
) -> None:
    api, system = gateway, two_instances
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=CAPACITY, price=25)
    buyers = await customers(api, admin, CUSTOMERS)

    worst: list[int] = []
    racing = True

    engine = create_async_engine(system.database_url, poolclass=NullPool)

    async def watch_inventory() -> None:
        async with engine.connect() as conn:
            while racing:
                row = (await conn.execute(INVENTORY, {"t": event.type_id})).one()
                worst.append(row.sold + row.held - row.max_count)
                await conn.commit()
                await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_inventory())
    # Fresh connections for the race (an idle keep-alive connection may be closed under us).
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=120) as race:
        adds = await asyncio.gather(*(add(race, b, event.type_id) for b in buyers))
        winners = [b for b, r in zip(buyers, adds, strict=True) if r.status_code == 200]
        losers = [r for r in adds if r.status_code != 200]
        checkouts = await asyncio.gather(
            *(race.post("/api/cart/checkout", headers=b.headers) for b in winners)
        )
    racing = False
    await watcher
    await engine.dispose()

    assert len(winners) == CAPACITY
    sold_out = f"Not enough tickets available for '{event.name} - Standard Ticket'. Only 0 left."
    assert {(r.status_code, r.json()["detail"]) for r in losers} == {(400, sold_out)}
    assert [c.status_code for c in checkouts] == [200] * CAPACITY, [c.text for c in checkouts]
    assert worst and max(worst) <= 0
    [tickets] = await db_rows(
        system, "SELECT count(*) AS n FROM ordering.tickets WHERE type_id = :t", t=event.type_id
    )
    assert tickets.n == CAPACITY
    [row] = await db_rows(
        system,
        "SELECT sold, held FROM ordering.ticket_types WHERE type_id = :t",
        t=event.type_id,
    )
    assert (row.sold, row.held) == (CAPACITY, 0)
    owners = await db_rows(
        system, "SELECT DISTINCT owner_id FROM ordering.tickets WHERE type_id = :t", t=event.type_id
    )
    assert {o.owner_id for o in owners} == {b.user_id for b in winners}
    # Both instances took part in the race.
    assert all(count > 0 for count in await ordering_requests(system))
    loser = next(b for b in buyers if b not in winners)
    late = await add(api, loser, event.type_id)
    assert (late.status_code, late.json()["detail"]) == (400, sold_out)
