"""The cart through the gateway (API.md §8.1–8.3): holds, purchase rules R1–R5 in order, owners
only, and read-your-writes across catalog and ordering (§1.8)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.actors import Account, active_customer, admin_token, verified_organizer
from tests.support.shop import (
    add,
    approve,
    available,
    create_event,
    event_on_sale,
    eventually,
    ticket_type,
)
from tests.support.system import System, answers_of


async def people(api: httpx.AsyncClient) -> tuple[str, Account, Account]:
    admin = await admin_token(api)
    return admin, await verified_organizer(api, admin), await active_customer(api, admin)


async def test_cart_endpoints_refuse_anonymous_and_non_customers(api: httpx.AsyncClient) -> None:
    admin, organizer, _ = await people(api)
    calls = [
        ("GET", "/api/cart/items"),
        ("POST", "/api/cart/items?ticket_type_id=1"),
        ("DELETE", "/api/cart/items/1"),
        ("POST", "/api/cart/checkout"),
        ("GET", "/api/orders"),
        ("GET", "/api/orders/1"),
    ]
    for method, path in calls:
        anonymous = await api.request(method, path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.json() == {"detail": "Not authenticated"}
        for token in (organizer.token, admin):
            refused = await api.request(method, path, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json() == {"detail": "Only customers can purchase tickets"}


async def test_add_checks_input_then_existence(api: httpx.AsyncClient) -> None:
    _, _, buyer = await people(api)
    bad = await api.post("/api/cart/items", json={"ticket_type_id": "x"}, headers=buyer.headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "ticket_type_id"]
    missing = await api.post("/api/cart/items", headers=buyer.headers)
    assert missing.status_code == 422
    zero = await api.post(
        "/api/cart/items", params={"ticket_type_id": 999999, "quantity": 0}, headers=buyer.headers
    )
    assert (zero.status_code, zero.json()) == (400, {"detail": "Quantity must be at least 1"})
    unknown = await add(api, buyer, 999999)
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"detail": "Ticket type with ID 999999 not found"},
    )


async def test_approved_event_is_buyable_at_once(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    event = await create_event(api, admin, organizer)
    pending = await add(api, buyer, event.type_id)
    assert (pending.status_code, pending.json()) == (
        400,
        {"detail": f"Event '{event.name}' is not yet active."},
    )
    await approve(api, admin, event.event_id)
    added = await add(api, buyer, event.type_id)  # no pause: read-your-writes
    assert added.status_code == 200, added.text


async def test_new_ticket_type_is_buyable_at_once(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    event = await event_on_sale(api, admin, organizer)
    vip = await ticket_type(api, organizer, event.event_id, max_count=4, price=99.5)
    added = await add(api, buyer, vip["type_id"], 2)
    assert added.status_code == 200, added.text
    bought = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert (bought.status_code, bought.json()) == (200, True)


async def test_purchase_rules_have_their_exact_messages(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    now = datetime.now(UTC)
    rejected = await create_event(api, admin, organizer)
    response = await api.post(
        f"/api/events/reject/{rejected.event_id}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 200
    r1 = await add(api, buyer, rejected.type_id)
    assert r1.json() == {"detail": f"Event '{rejected.name}' is not available for sale."}

    later = await event_on_sale(api, admin, organizer, sales_start=now + timedelta(days=2))
    r2 = await add(api, buyer, later.type_id)
    assert (r2.status_code, r2.json()) == (
        400,
        {"detail": f"Ticket type with ID {later.type_id} is not available for sale yet"},
    )

    ended = await event_on_sale(
        api, admin, organizer, start=now - timedelta(days=2), end=now - timedelta(days=1),
        sales_start=now - timedelta(days=5),
    )  # fmt: skip
    r3 = await add(api, buyer, ended.type_id)
    assert (r3.status_code, r3.json()) == (
        400,
        {"detail": f"Event '{ended.name}' has already ended."},
    )

    small = await event_on_sale(api, admin, organizer, tickets=3)
    r4 = await add(api, buyer, small.type_id, 4)
    assert (r4.status_code, r4.json()) == (
        400,
        {
            "detail": f"Not enough tickets available for '{small.name} - Standard Ticket'. Only 3 left."
        },
    )

    big = await event_on_sale(api, admin, organizer, tickets=100)
    assert (await add(api, buyer, big.type_id, 20)).status_code == 200
    r5 = await add(api, buyer, big.type_id, 1)
    assert (r5.status_code, r5.json()) == (
        400,
        {"detail": "You can hold or buy at most 20 tickets for this event"},
    )
    # R5 is checked before R4.
    over_both = await add(api, buyer, small.type_id, 21)
    assert over_both.json() == {"detail": "You can hold or buy at most 20 tickets for this event"}


async def test_one_currency_per_cart(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    event = await event_on_sale(api, admin, organizer)
    euro = await ticket_type(api, organizer, event.event_id, currency="EUR")
    assert (await add(api, buyer, event.type_id)).status_code == 200
    mixed = await add(api, buyer, euro["type_id"])
    assert (mixed.status_code, mixed.json()) == (
        400,
        {"detail": "All tickets in the cart must use the same currency (USD)"},
    )


async def test_adding_again_grows_the_line_and_restarts_its_hold(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    event = await event_on_sale(api, admin, organizer, tickets=10, price=12.5)
    first = await api.post(
        "/api/cart/items/",
        params={"ticket_type_id": event.type_id, "quantity": 2},
        headers=buyer.headers,
    )
    assert first.status_code == 200, first.text
    line = first.json()
    assert line["quantity"] == 2
    assert line["ticket_type"] == {
        "type_id": event.type_id,
        "event_id": event.event_id,
        "description": "Standard Ticket",
        "max_count": 10,
        "price": 12.5,
        "currency": "USD",
        "available_from": line["ticket_type"]["available_from"],
    }
    expires = datetime.fromisoformat(line["hold_expires_at"])
    assert (
        timedelta(minutes=14)
        < expires - datetime.now(UTC).replace(tzinfo=None)
        <= timedelta(minutes=15)
    )
    second = await add(api, buyer, event.type_id, 3)
    assert second.json()["cart_item_id"] == line["cart_item_id"]
    assert second.json()["quantity"] == 5
    assert second.json()["hold_expires_at"] > line["hold_expires_at"]
    items = await api.get("/api/cart/items", headers=buyer.headers)
    assert [i["quantity"] for i in items.json()] == [5]
    assert await available(api, event.event_id, event.type_id) == 5


async def test_removing_a_line_releases_its_hold_and_only_the_owner_can(
    api: httpx.AsyncClient,
) -> None:
    admin, organizer, buyer = await people(api)
    other = await active_customer(api, admin)
    no_cart = await api.delete("/api/cart/items/1", headers=other.headers)
    assert (no_cart.status_code, no_cart.json()) == (404, {"detail": "Shopping cart not found"})
    event = await event_on_sale(api, admin, organizer, tickets=5)
    line = (await add(api, buyer, event.type_id, 4)).json()
    assert await available(api, event.event_id, event.type_id) == 1
    assert (await add(api, other, event.type_id, 1)).status_code == 200  # now other has a cart
    item = line["cart_item_id"]
    for who in (other,):
        stolen = await api.delete(f"/api/cart/items/{item}", headers=who.headers)
        assert (stolen.status_code, stolen.json()) == (
            404,
            {"detail": f"Item with ID {item} not found in your cart"},
        )
    not_int = await api.delete("/api/cart/items/abc", headers=buyer.headers)
    assert not_int.status_code == 422
    huge = await api.delete(f"/api/cart/items/{'9' * 5000}", headers=buyer.headers)
    assert (huge.status_code, huge.json()) == (
        404,
        {"detail": f"Item with ID {'9' * 5000} not found in your cart"},
    )
    removed = await api.delete(f"/api/cart/items/{item}", headers=buyer.headers)
    assert (removed.status_code, removed.json()) == (200, True)
    assert await available(api, event.event_id, event.type_id) == 4
    assert (await api.get("/api/cart/items", headers=buyer.headers)).json() == []
    again = await api.delete(f"/api/cart/items/{item}", headers=buyer.headers)
    assert again.status_code == 404


async def test_cancelled_event_empties_carts_and_stops_sales(
    api: httpx.AsyncClient, system: System
) -> None:
    admin, organizer, buyer = await people(api)
    event = await event_on_sale(api, admin, organizer)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    cancel = await api.delete(f"/api/events/{event.event_id}", headers=organizer.headers)
    assert cancel.status_code == 200

    async def cart_emptied() -> bool:
        return (await api.get("/api/cart/items", headers=buyer.headers)).json() == []

    assert await eventually(cart_emptied)
    refused = await add(api, buyer, event.type_id)
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": f"Event '{event.name}' has been cancelled."},
    )


async def test_event_page_shows_live_availability(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await people(api)
    event = await event_on_sale(api, admin, organizer, tickets=7)
    assert await available(api, event.event_id, event.type_id) == 7
    assert await available(api, event.event_id, event.type_id) == 7  # remembered by ordering
    assert (await add(api, buyer, event.type_id, 3)).status_code == 200
    assert await available(api, event.event_id, event.type_id) == 4  # and forgotten at once


async def test_a_sweep_that_finds_no_expired_hold_keeps_the_remembered_availability(
    api: httpx.AsyncClient, system: System
) -> None:
    """The hold sweeper runs every second; one that found nothing to release commits nothing,
    so ordering's remembered answers outlive it (a commit makes the instance forget them)."""
    admin, organizer, _ = await people(api)
    event = await event_on_sale(api, admin, organizer, tickets=5)

    async def remembered() -> bool:
        hits = await answers_of(system, "ordering", "hit")
        assert await available(api, event.event_id, event.type_id) == 5
        return await answers_of(system, "ordering", "hit") == hits + 1

    # Once catalog's events about the new event are applied, every instance remembers it.
    for _ in range(len(system.instances("ordering"))):
        assert await eventually(remembered, timeout=10)
    await asyncio.sleep(2.5)  # two sweeps or more on every instance
    assert await remembered()
