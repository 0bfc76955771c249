"""RabbitMQ unreachable for several seconds during checkouts and resale purchases: the requests
still succeed (their events wait in the outbox), failed ones publish nothing, and once the
broker is back every event reaches every consumer exactly once, without restarting anything."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.faults.conftest import Rig
from tests.faults.workload import Outcomes, buy_listed, checkout_once, checkouts_until, market
from tests.support.invariants import check_invariants, db_rows
from tests.support.shop import eventually

OUTAGE_S = 6.0


async def _ready(gw: httpx.AsyncClient, rig: Rig) -> bool:
    for name in rig.system.services:
        response = await gw.get(f"{rig.system.url(name)}/ready")
        if response.status_code != 200:
            return False
    return True


async def test_broker_outage_loses_nothing_and_publishes_no_failure(
    rig: Rig, gw: httpx.AsyncClient
) -> None:
    system = rig.system
    shop = await market(gw, buyers=6, sellers=3, listings_each=2)
    pids = {name: p.pid for name, p in system.processes.items()}
    sales, failed = Outcomes(), Outcomes()
    decliner, resale_decliner = shop.buyers[4], shop.buyers[5]
    done = asyncio.Event()

    await asyncio.to_thread(rig.broker.cut)
    cut = time.monotonic()
    try:
        stream = asyncio.create_task(checkouts_until(gw, shop.buyers[:4], shop.event.type_id, done))
        # Declined payments while the broker is away: they must publish nothing that sells.
        declined = await checkout_once(
            gw, decliner, shop.event.type_id, failed, token="tok_card_declined"
        )
        assert declined is not None and declined.status_code == 402, declined
        refused = await buy_listed(
            gw, resale_decliner, shop.listed[0][1], failed, payment_token="tok_card_declined"
        )
        assert refused is not None and refused.status_code == 402, refused.text
        purchases = asyncio.gather(
            *(
                buy_listed(gw, shop.buyers[i % 4], ticket_id, sales)
                for i, (_, ticket_id) in enumerate(shop.listed)
            )
        )
        await asyncio.sleep(OUTAGE_S)
        while_away = time.monotonic()
    finally:
        await asyncio.to_thread(rig.broker.restore)
    await purchases
    done.set()
    checkouts = await stream

    # Checkouts were answered while the broker was away, not held until it came back; sales
    # 200, or 202 once their transfer (which needs the broker) was waited for. Never a 5xx.
    assert set(checkouts.statuses) == {200}, checkouts
    assert checkouts.succeeded_between(cut, while_away) >= 4, checkouts
    assert checkouts.slowest_s < OUTAGE_S / 2, checkouts
    assert set(sales.statuses) <= {200, 202} and len(sales.purchases) == len(shop.listed), sales

    # Every sale completes once the events flow again (this test's: the system is shared).
    async def settled() -> bool:
        rows = await db_rows(
            system,
            "SELECT count(*) AS n FROM resale.purchases"
            " WHERE status = 'completed' AND ticket_id = ANY(:ids)",
            ids=[ticket_id for _, ticket_id in shop.listed],
        )
        return rows[0].n == len(shop.listed)

    assert await eventually(settled, timeout=60)
    # Nothing sold was published for the declined ones.
    failed_order = await db_rows(
        system, "SELECT order_id FROM ordering.orders WHERE user_id = :u", u=decliner.user_id
    )
    assert [r for r in failed_order], "the declined checkout left no failed order"
    sold_events = await db_rows(
        system,
        "SELECT type FROM ordering.outbox WHERE type IN "
        "('ordering.OrderCompleted', 'ordering.TicketPurchased') "
        "AND (payload->>'order_id')::bigint = ANY(:ids)",
        ids=[r.order_id for r in failed_order],
    )
    assert sold_events == []
    listing_sold = await db_rows(
        system,
        "SELECT o.type FROM resale.outbox o JOIN resale.purchases p "
        "ON (o.payload->>'purchase_id')::bigint = p.purchase_id "
        "WHERE o.type = 'resale.ListingSold' AND p.status = 'failed'",
    )
    assert listing_sold == []
    # Recovered by themselves: same processes, ready again (broker connection restored).
    assert {n: p.pid for n, p in system.processes.items()} == pids
    assert await eventually(lambda: _ready(gw, rig), timeout=60)

    report = await check_invariants(system)
    print(
        f"\ninjected: RabbitMQ cut for {OUTAGE_S:.0f}s during {checkouts.completed} checkouts "
        f"and {len(shop.listed)} resale purchases (+2 declined); invariants: {report}"
    )
