"""Holds expire on their own: hold every ticket, let the holds run out (a hold of ~2 s here),
and the tickets are on sale again; the holder's cart no longer has them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.actors import active_customer, admin_token, verified_organizer
from tests.support.shop import add, available, db_rows, event_on_sale, eventually
from tests.support.system import System, running

HOLD_MINUTES = 0.03  # 1.8 s


@pytest.fixture(scope="module")
def short_holds() -> Iterator[System]:
    with running({"CART_HOLD_MINUTES": str(HOLD_MINUTES)}) as system:
        yield system


@pytest.fixture(scope="module")
async def gateway(short_holds: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=short_holds.gateway_url, timeout=30) as client:
        yield client


async def test_expired_holds_go_back_on_sale_and_leave_the_cart(
    gateway: httpx.AsyncClient, short_holds: System
) -> None:
    api = gateway
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    hoarder = await active_customer(api, admin)
    buyer = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=5)

    assert (await add(api, hoarder, event.type_id, 5)).status_code == 200
    blocked = await add(api, buyer, event.type_id)
    assert blocked.json()["detail"].endswith("Only 0 left.")
    assert await available(api, event.event_id, event.type_id) == 0

    async def released() -> bool:
        return await available(api, event.event_id, event.type_id) == 5

    # The background sweeper releases them without anyone asking.
    assert await eventually(released, timeout=15)
    assert (await api.get("/api/cart/items", headers=hoarder.headers)).json() == []
    expired = await db_rows(
        short_holds,
        "SELECT payload FROM ordering.outbox WHERE type = 'ordering.HoldExpired'"
        " AND (payload->>'user_id')::int = :u",
        u=hoarder.user_id,
    )
    assert [e.payload["quantity"] for e in expired] == [5]

    assert (await add(api, buyer, event.type_id, 5)).status_code == 200
    bought = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert (bought.status_code, bought.json()) == (200, True)
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 5
    late = await api.post("/api/cart/checkout", headers=hoarder.headers)
    assert (late.status_code, late.json()) == (400, {"detail": "Shopping cart is empty"})


async def test_an_expired_hold_yields_to_a_new_buyer_at_once(
    gateway: httpx.AsyncClient, short_holds: System
) -> None:
    """A buyer who needs expired holds gets them as soon as they expire."""
    api = gateway
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    hoarder = await active_customer(api, admin)
    buyer = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=2)
    assert (await add(api, hoarder, event.type_id, 2)).status_code == 200
    await asyncio.sleep(HOLD_MINUTES * 60 + 0.2)
    taken = await add(api, buyer, event.type_id, 2)
    assert taken.status_code == 200, taken.text
    assert await available(api, event.event_id, event.type_id) == 0
