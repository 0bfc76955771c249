"""A "no" that rests on another service's events is given only once caught up with that
service (API.md §1.8). With the service away it cannot be: the answer is 503 "Service
unavailable" (§1.2, a needed service down), not a refusal that a moment later might be a 200."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.faults.conftest import Rig
from tests.faults.workload import market
from tests.support.invariants import check_invariants
from tests.support.shop import add

UNAVAILABLE = (503, {"detail": "Service unavailable"})


async def test_a_refusal_that_cannot_catch_up_answers_503(rig: Rig, gw: httpx.AsyncClient) -> None:
    shop = await market(gw, buyers=1, sellers=1)
    [buyer] = shop.buyers
    [(seller, listed)] = shop.listed
    unknown = 2**31 - 1
    await asyncio.to_thread(rig.system.stop_app, "catalog", signal.SIGKILL)
    try:
        blind_add = await add(gw, buyer, unknown)
        blind_listing = await gw.post(
            f"/api/tickets/{unknown}/resell", json={"price": 10}, headers=buyer.headers
        )
        # A "yes" does not wait on catalog: the customer's own cart still answers, and a
        # listing is withdrawn. A "no" that rests on resale's own listings is given at once.
        cart = await gw.get("/api/cart/items", headers=buyer.headers)
        withdrawn = await gw.delete(f"/api/tickets/{listed}/resell", headers=seller.headers)
        again = await gw.delete(f"/api/tickets/{listed}/resell", headers=seller.headers)
    finally:
        await asyncio.to_thread(rig.system.start_app, "catalog")
    assert (blind_add.status_code, blind_add.json()) == UNAVAILABLE
    assert (blind_listing.status_code, blind_listing.json()) == UNAVAILABLE
    assert cart.status_code == 200, cart.text
    assert withdrawn.status_code == 200, withdrawn.text
    assert (again.status_code, again.json()) == (
        400,
        {"detail": "Ticket is not listed for resale"},
    )

    refused = await add(gw, buyer, unknown)
    assert (refused.status_code, refused.json()) == (
        404,
        {"detail": f"Ticket type with ID {unknown} not found"},
    )
    unlisted = await gw.post(
        f"/api/tickets/{unknown}/resell", json={"price": 10}, headers=buyer.headers
    )
    assert (unlisted.status_code, unlisted.json()) == (404, {"detail": "Ticket not found"})
    await check_invariants(rig.system)
