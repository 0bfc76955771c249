"""kill -9 under load, then start again: ordering during checkouts, resale during purchases,
and ordering while it is handling a burst of events (sales to transfer, a cancellation to
refund). Nothing may be lost or doubled: tickets, holds, charges, events."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx

from tests.faults.conftest import STALLED_CHECKOUT_S, Rig
from tests.faults.workload import Outcomes, buy_listed, checkouts_until, market
from tests.support.invariants import check_invariants, db_rows
from tests.support.shop import add, eventually, holding, waiting_for_lock
from tests.support.system import System

# What a client may see while a service is down or restarting: never a 500.
WHILE_DOWN = {200, 202, 409, 503}


async def _kill_and_restart(system: System, name: str) -> float:
    started = time.monotonic()
    await asyncio.to_thread(system.stop_app, name, signal.SIGKILL)
    await asyncio.to_thread(system.start_app, name)
    return time.monotonic() - started


async def _kill_mid_charge(
    system: System, name: str, running: asyncio.Future[Any], in_flight: str
) -> tuple[list[Any], float]:
    """Kill `name` while `running`'s work waits on the processor's ledger (the test holds its
    table), then start it again: the rows `in_flight` (SQL) named at the kill, and how long it
    was down."""
    async with holding(system, f"LOCK TABLE {name}.payments IN EXCLUSIVE MODE"):
        await waiting_for_lock(system, f'%"{name}".payments%', running)
        rows = await db_rows(system, in_flight)
        started = time.monotonic()
        await asyncio.to_thread(system.stop_app, name, signal.SIGKILL)
    await asyncio.to_thread(system.start_app, name)
    return rows, time.monotonic() - started


async def _until(check: object, timeout: float = 30.0) -> None:
    assert await eventually(check, timeout=timeout), f"not reached in {timeout}s"


async def test_kill_ordering_during_checkouts(rig: Rig, gw: httpx.AsyncClient) -> None:
    """Killed while checkouts are between their pending order and their charge's answer (the
    processor's ledger locked, so at least one is): each such order is settled by recovery
    after the restart, completed with its charge or failed, and none stays pending."""
    system = rig.system
    shop = await market(gw, buyers=6)
    done = asyncio.Event()
    stream = asyncio.create_task(
        checkouts_until(gw, shop.buyers, shop.event.type_id, done, each=12, pause_s=0.05)
    )

    async def selling() -> bool:
        rows = await db_rows(system, "SELECT count(*) AS n FROM ordering.orders")
        return rows[0].n >= 8

    await _until(selling)
    pending, down_s = await _kill_mid_charge(
        system, "ordering", stream, "SELECT order_id FROM ordering.orders WHERE status = 'pending'"
    )
    done.set()
    out = await stream
    assert set(out.statuses) <= WHILE_DOWN, out
    # Every buyer can check out again: no cart stays stuck "in progress" after the crash.
    # A cart the crash left "in progress" answers 409 until recovery settles its order: each
    # buyer holds one more ticket once, then checks out until it goes through (adding one
    # per try would reach R5's 20 tickets before then).
    again = Outcomes()
    for buyer in shop.buyers:
        assert (await add(gw, buyer, shop.event.type_id, 1)).status_code == 200

        async def bought(buyer=buyer) -> bool:  # type: ignore[no-untyped-def]
            started = time.monotonic()
            response = await gw.post("/api/cart/checkout", headers=buyer.headers)
            again.record(response, started)
            return response.status_code == 200

        assert await eventually(bought, timeout=STALLED_CHECKOUT_S + 30), again
    assert set(again.statuses) <= {200, 409}, again
    assert pending, "no checkout was under way when ordering was killed"
    settled = await db_rows(
        system,
        "SELECT status FROM ordering.orders WHERE order_id = ANY(:ids)",
        ids=[row.order_id for row in pending],
    )
    assert len(settled) == len(pending), settled
    assert {row.status for row in settled} <= {"completed", "failed"}, settled

    report = await check_invariants(system)
    print(
        f"\ninjected: kill -9 ordering during {sum(out.statuses.values())} checkouts "
        f"({dict(out.details)}), back in {down_s:.1f}s; invariants: {report}"
    )


async def test_kill_resale_during_purchases(rig: Rig, gw: httpx.AsyncClient) -> None:
    """Killed while purchases wait for their charge's answer (the processor's ledger locked,
    so at least one does): each is settled after the restart, none stays charging."""
    system = rig.system
    shop = await market(gw, buyers=4, sellers=4, listings_each=3)
    out = Outcomes()
    buying = asyncio.gather(
        *(
            buy_listed(gw, shop.buyers[i % 4], ticket_id, out)
            for i, (_, ticket_id) in enumerate(shop.listed)
        )
    )

    async def selling() -> bool:
        rows = await db_rows(system, "SELECT count(*) AS n FROM resale.purchases")
        return rows[0].n >= 3

    await _until(selling)
    charging, down_s = await _kill_mid_charge(
        system,
        "resale",
        buying,
        "SELECT purchase_id FROM resale.purchases WHERE status = 'charging'",
    )
    await buying
    assert set(out.statuses) <= WHILE_DOWN, out
    # Buyers whose answer was lost try again with the same key: each ticket is sold once.
    for i, (_, ticket_id) in enumerate(shop.listed):
        retry = Outcomes()
        await buy_listed(gw, shop.buyers[i % 4], ticket_id, retry)
        assert set(retry.statuses) <= {200, 202, 409}, retry
    assert charging, "no purchase was being charged when resale was killed"

    async def settled() -> bool:
        rows = await db_rows(
            system,
            "SELECT count(*) AS n FROM resale.purchases"
            " WHERE purchase_id = ANY(:ids) AND status IN ('completed', 'failed')",
            ids=[row.purchase_id for row in charging],
        )
        return rows[0].n == len(charging)

    await _until(settled, timeout=STALLED_CHECKOUT_S + 30)

    report = await check_invariants(system)
    print(
        f"\ninjected: kill -9 resale during {len(shop.listed)} purchases "
        f"({dict(out.statuses)}), back in {down_s:.1f}s; invariants: {report}"
    )


async def test_kill_consumer_in_the_middle_of_handling(rig: Rig, gw: httpx.AsyncClient) -> None:
    """A burst of ListingSold and an EventCancelled with many orders to refund: ordering is
    killed once it has started on them, and handles each exactly once after the restart."""
    system = rig.system
    doomed = await market(gw, buyers=6)
    # One pass: each buyer checks out five single-ticket orders.
    orders = await checkouts_until(
        gw, doomed.buyers, doomed.event.type_id, asyncio.Event(), each=5, pause_s=0
    )
    assert orders.completed == 30, orders
    shop = await market(gw, buyers=4, sellers=3, listings_each=10)
    out = Outcomes()
    burst = asyncio.gather(
        *(
            buy_listed(gw, shop.buyers[i % 4], ticket_id, out)
            for i, (_, ticket_id) in enumerate(shop.listed)
        )
    )
    # Catalog answers the cancellation once ordering has applied it (or could not say so):
    # not awaited here, so that ordering dies while it applies it; killed only once the
    # cancellation is committed.
    cancelling = asyncio.create_task(
        gw.delete(f"/api/events/{doomed.event.event_id}", headers=doomed.event.organizer.headers)
    )
    handled_types = ("resale.ListingSold", "catalog.EventCancelled")

    async def cancellation_committed() -> bool:
        rows = await db_rows(
            system,
            "SELECT count(*) AS n FROM catalog.outbox WHERE type = 'catalog.EventCancelled'"
            " AND aggregate_id = :a",
            a=f"event-{doomed.event.event_id}",
        )
        return int(rows[0].n) == 1

    async def in_flight() -> int:
        rows = await db_rows(
            system,
            "SELECT count(*) AS n FROM ordering.inbox WHERE type = ANY(:t)",
            t=list(handled_types),
        )
        return int(rows[0].n)

    async def started() -> bool:
        return await in_flight() >= 1

    await _until(cancellation_committed)
    await _until(started)
    before = await in_flight()
    down_s = await _kill_and_restart(system, "ordering")
    assert before < len(shop.listed) + 1, "every event was handled before the kill"
    await burst
    cancelled = await cancelling
    assert cancelled.status_code == 200, cancelled.text
    assert set(out.statuses) <= WHILE_DOWN, out

    report = await check_invariants(system)
    refunded = await db_rows(
        system,
        "SELECT count(*) AS n FROM ordering.tickets WHERE event_id = :e AND status = 'refunded'",
        e=doomed.event.event_id,
    )
    assert refunded[0].n == 30
    print(
        f"\ninjected: kill -9 ordering after {before} of {len(shop.listed) + 1} burst events "
        f"were handled (ListingSold x{len(shop.listed)}, EventCancelled with 30 orders), "
        f"back in {down_s:.1f}s; invariants: {report}"
    )
