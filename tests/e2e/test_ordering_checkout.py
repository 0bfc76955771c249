"""Checkout and orders through the gateway (API.md §8.4–8.6, §1.6 Idempotency-Key): one charge
per checkout whatever is repeated, a declined card or a rule broken since the add issues
nothing and keeps the cart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.actors import Account, active_customer, admin_token, unique, verified_organizer
from tests.support.shop import (
    OnSale,
    add,
    available,
    db_rows,
    event_on_sale,
    eventually,
    holding,
    iso,
    waiting_for_lock,
)
from tests.support.system import System


async def shop(
    api: httpx.AsyncClient, tickets: int = 20, price: float = 15
) -> tuple[OnSale, Account]:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=tickets, price=price)
    return event, await active_customer(api, admin)


async def orders_of(api: httpx.AsyncClient, buyer: Account) -> list[dict]:
    response = await api.get("/api/orders", headers=buyer.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def charges(system: System, user_id: int) -> list[str]:
    """The payment ledger's captures for the user's orders: one per real charge."""
    rows = await db_rows(
        system,
        "SELECT p.state FROM ordering.payments p JOIN ordering.orders o"
        " ON p.authorize_key = 'order-' || o.order_id WHERE o.user_id = :u",
        u=user_id,
    )
    return [row.state for row in rows]


async def test_checkout_of_an_empty_cart(api: httpx.AsyncClient) -> None:
    _, buyer = await shop(api)
    response = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert (response.status_code, response.json()) == (400, {"detail": "Shopping cart is empty"})


async def test_checkout_issues_tickets_empties_cart_and_mails_a_confirmation(
    api: httpx.AsyncClient, system: System
) -> None:
    event, buyer = await shop(api, tickets=10, price=15)
    assert (await add(api, buyer, event.type_id, 3)).status_code == 200
    response = await api.post("/api/cart/checkout/", headers=buyer.headers)
    assert (response.status_code, response.json()) == (200, True)

    mine = (await api.get("/api/tickets", headers=buyer.headers)).json()
    assert len(mine) == 3
    assert {(t["owner_id"], t["original_price"], t["status"]) for t in mine} == {
        (buyer.user_id, 15.0, "valid")
    }
    assert (await api.get("/api/cart/items", headers=buyer.headers)).json() == []
    assert await available(api, event.event_id, event.type_id) == 7
    [order] = await orders_of(api, buyer)
    assert order["status"] == "completed" and order["total_amount"] == 45.0
    assert order["currency"] == "USD"
    assert order["ticket_ids"] == sorted(t["ticket_id"] for t in mine)
    assert order["items"] == [
        {
            "ticket_type_id": event.type_id,
            "event_id": event.event_id,
            "event_name": event.name,
            "ticket_type_description": "Standard Ticket",
            "quantity": 3,
            "unit_price": 15.0,
        }
    ]
    one = await api.get(f"/api/orders/{order['order_id']}", headers=buyer.headers)
    assert one.json() == order
    subject = f"Your Resellio order #{order['order_id']}"

    async def confirmation() -> list:
        return [m for m in system.mails(buyer.email) if m["Subject"] == subject]

    assert len(await eventually(confirmation)) == 1
    codes = await db_rows(
        system, "SELECT code FROM ordering.tickets WHERE owner_id = :u", u=buyer.user_id
    )
    assert len({row.code for row in codes}) == 3 and all(len(row.code) >= 22 for row in codes)


async def test_declined_card_fails_the_order_and_keeps_cart_and_holds(
    api: httpx.AsyncClient, system: System
) -> None:
    event, buyer = await shop(api, tickets=5)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    declined = await api.post(
        "/api/cart/checkout", json={"payment_token": "tok_card_declined"}, headers=buyer.headers
    )
    assert (declined.status_code, declined.json()) == (402, {"detail": "Payment declined"})
    assert (await api.get("/api/tickets", headers=buyer.headers)).json() == []
    assert [o["status"] for o in await orders_of(api, buyer)] == ["failed"]
    assert [
        i["quantity"] for i in (await api.get("/api/cart/items", headers=buyer.headers)).json()
    ] == [2]
    assert await available(api, event.event_id, event.type_id) == 3
    assert await charges(system, buyer.user_id) == ["declined"]

    down = await api.post(
        "/api/cart/checkout",
        json={"payment_token": "tok_processor_unavailable"},
        headers=buyer.headers,
    )
    assert (down.status_code, down.json()) == (503, {"detail": "Payment service unavailable"})

    too_long = await api.post(
        "/api/cart/checkout", json={"payment_token": "x" * 256}, headers=buyer.headers
    )
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "payment_token"]
    paid = await api.post(
        "/api/cart/checkout", json={"payment_token": "tok_visa"}, headers=buyer.headers
    )
    assert (paid.status_code, paid.json()) == (200, True)
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 2
    assert sorted(await charges(system, buyer.user_id)) == ["captured", "declined"]


async def test_checkout_refuses_an_event_that_ended_since_the_add_before_charging(
    api: httpx.AsyncClient, system: System
) -> None:
    """R3 is checked again at checkout (§8.4): the organizer moves the event into the past
    after the line was added, and the checkout that follows at once answers R3's message with
    nothing charged, no order recorded, and the cart and its hold as they were."""
    event, buyer = await shop(api, tickets=5)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    cart = (await api.get("/api/cart/items", headers=buyer.headers)).json()
    past = datetime.now(UTC) - timedelta(days=2)
    moved = await api.put(
        f"/api/events/{event.event_id}",
        json={"start_date": iso(past), "end_date": iso(past + timedelta(hours=3))},
        headers=event.organizer.headers,
    )
    assert moved.status_code == 200, moved.text
    refused = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": f"Event '{event.name}' has already ended."},
    )
    assert await charges(system, buyer.user_id) == []
    assert await orders_of(api, buyer) == []
    assert (await api.get("/api/tickets", headers=buyer.headers)).json() == []
    assert (await api.get("/api/cart/items", headers=buyer.headers)).json() == cart
    assert await available(api, event.event_id, event.type_id) == 3


async def test_same_checkout_repeated_with_one_key_charges_once(
    api: httpx.AsyncClient, system: System
) -> None:
    event, buyer = await shop(api)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    headers = {**buyer.headers, "Idempotency-Key": "checkout-once-1"}
    first = await api.post("/api/cart/checkout", headers=headers)
    second = await api.post("/api/cart/checkout", headers=headers)
    assert (first.status_code, first.json()) == (second.status_code, second.json()) == (200, True)
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 2
    assert await charges(system, buyer.user_id) == ["captured"]
    other = await api.post("/api/cart/checkout", json={"payment_token": "x"}, headers=headers)
    assert (other.status_code, other.json()) == (
        409,
        {"detail": "Idempotency-Key reused with a different request"},
    )


async def test_one_idempotency_key_sent_by_two_customers_checks_out_each_cart(
    api: httpx.AsyncClient, system: System
) -> None:
    """An Idempotency-Key is scoped to its user (§1.6): a second customer who sends the key
    another customer already used gets a checkout of their own, not the first one's stored
    answer: each is charged once and holds their own tickets."""
    event, first = await shop(api)
    second = await active_customer(api, await admin_token(api))
    assert (await add(api, first, event.type_id, 1)).status_code == 200
    assert (await add(api, second, event.type_id, 2)).status_code == 200
    key = {"Idempotency-Key": unique("checkout-shared-")}
    for buyer in (first, second):
        paid = await api.post("/api/cart/checkout", headers={**buyer.headers, **key})
        assert (paid.status_code, paid.json()) == (200, True)
    for buyer, bought in ((first, 1), (second, 2)):
        mine = (await api.get("/api/tickets", headers=buyer.headers)).json()
        assert [t["owner_id"] for t in mine] == [buyer.user_id] * bought
        assert await charges(system, buyer.user_id) == ["captured"]
        assert [o["status"] for o in await orders_of(api, buyer)] == ["completed"]
        assert (await api.get("/api/cart/items", headers=buyer.headers)).json() == []


async def test_a_key_left_in_progress_by_a_request_that_died_is_taken_over(
    api: httpx.AsyncClient, system: System
) -> None:
    """A checkout's key whose request died before its answer (in progress for longer than
    idempotency.STALE_AFTER) is claimed again: the checkout runs once and stores its answer."""
    event, buyer = await shop(api)
    assert (await add(api, buyer, event.type_id, 1)).status_code == 200
    engine = create_async_engine(system.database_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ordering.idempotency_keys"
                " (user_id, method, path, key, fingerprint, state, created_at)"
                " VALUES (:u, 'POST', '/api/cart/checkout', 'checkout-stale-1', 'dead',"
                " 'in_progress', now() - interval '3 minutes')"
            ),
            {"u": buyer.user_id},
        )
    await engine.dispose()
    headers = {**buyer.headers, "Idempotency-Key": "checkout-stale-1"}
    for _ in range(2):
        response = await api.post("/api/cart/checkout", headers=headers)
        assert (response.status_code, response.json()) == (200, True)
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 1
    assert await charges(system, buyer.user_id) == ["captured"]


async def test_concurrent_checkouts_with_one_key_charge_once(
    api: httpx.AsyncClient, system: System
) -> None:
    event, buyer = await shop(api)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    headers = {**buyer.headers, "Idempotency-Key": "checkout-race-1"}
    answers = await asyncio.gather(
        *(api.post("/api/cart/checkout", headers=headers) for _ in range(6))
    )
    outcomes = [(a.status_code, a.json()) for a in answers]
    assert outcomes.count((200, True)) >= 1
    busy = (409, {"detail": "A request with this Idempotency-Key is in progress"})
    assert all(o in ((200, True), busy) for o in outcomes), outcomes
    later = await api.post("/api/cart/checkout", headers=headers)
    assert (later.status_code, later.json()) == (200, True)
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 2
    assert await charges(system, buyer.user_id) == ["captured"]
    assert [o["status"] for o in await orders_of(api, buyer)] == ["completed"]


async def test_concurrent_checkouts_of_one_cart_sell_once(
    api: httpx.AsyncClient, system: System
) -> None:
    event, buyer = await shop(api)
    assert (await add(api, buyer, event.type_id, 3)).status_code == 200
    answers = await asyncio.gather(
        *(api.post("/api/cart/checkout", headers=buyer.headers) for _ in range(6))
    )
    outcomes = [(a.status_code, a.json()) for a in answers]
    assert outcomes.count((200, True)) == 1, outcomes
    allowed = {
        (409, "Checkout already in progress"),
        (400, "Shopping cart is empty"),
    }
    assert all((s, b["detail"]) in allowed for s, b in outcomes if s != 200), outcomes
    assert len((await api.get("/api/tickets", headers=buyer.headers)).json()) == 3
    assert await charges(system, buyer.user_id) == ["captured"]


async def test_add_repeated_with_one_key_is_counted_once(api: httpx.AsyncClient) -> None:
    event, buyer = await shop(api)
    first = await add(api, buyer, event.type_id, 2, **{"Idempotency-Key": "add-1"})
    again = await add(api, buyer, event.type_id, 2, **{"Idempotency-Key": "add-1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert [
        i["quantity"] for i in (await api.get("/api/cart/items", headers=buyer.headers)).json()
    ] == [2]
    reused = await add(api, buyer, event.type_id, 3, **{"Idempotency-Key": "add-1"})
    assert (reused.status_code, reused.json()["detail"]) == (
        409,
        "Idempotency-Key reused with a different request",
    )
    # A repeated query parameter's first value is the one read: its order makes the request.
    keyed = {**buyer.headers, "Idempotency-Key": "add-3"}
    as_sent = f"/api/cart/items?ticket_type_id={event.type_id}&quantity=1&quantity=3"
    assert (await api.post(as_sent, headers=keyed)).status_code == 200
    swapped = as_sent.replace("quantity=1&quantity=3", "quantity=3&quantity=1")
    reordered = await api.post(swapped, headers=keyed)
    assert (reordered.status_code, reordered.json()["detail"]) == (
        409,
        "Idempotency-Key reused with a different request",
    )
    # Stored errors are answered again too (a 404 is kept).
    gone = await add(api, buyer, 999999, **{"Idempotency-Key": "add-2"})
    assert (await add(api, buyer, 999999, **{"Idempotency-Key": "add-2"})).json() == gone.json()
    for bad in ("", "x" * 256, "caf\u00e9"):
        invalid = await api.post(
            "/api/cart/items",
            json={"ticket_type_id": event.type_id},
            headers={**buyer.headers, "Idempotency-Key": bad.encode("utf-8")},
        )
        assert invalid.status_code == 422, (bad, invalid.text)
        assert invalid.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_orders_are_paged_newest_first_and_private(api: httpx.AsyncClient) -> None:
    event, buyer = await shop(api)
    for quantity in (1, 2):
        assert (await add(api, buyer, event.type_id, quantity)).status_code == 200
        assert (await api.post("/api/cart/checkout", headers=buyer.headers)).status_code == 200
    page = await api.get("/api/orders", params={"limit": 1}, headers=buyer.headers)
    assert page.headers["X-Total-Count"] == "2"
    [newest] = page.json()
    assert newest["items"][0]["quantity"] == 2
    second = await api.get("/api/orders", params={"limit": 1, "page": 2}, headers=buyer.headers)
    assert second.json()[0]["items"][0]["quantity"] == 1
    past_end = await api.get("/api/orders", params={"page": 3, "limit": 1}, headers=buyer.headers)
    assert past_end.json() == []
    assert (
        await api.get("/api/orders", params={"limit": 0}, headers=buyer.headers)
    ).status_code == 422

    admin = await admin_token(api)
    stranger = await active_customer(api, admin)
    for order_id in (newest["order_id"], 0, 2**40):
        hidden = await api.get(f"/api/orders/{order_id}", headers=stranger.headers)
        assert (hidden.status_code, hidden.json()) == (404, {"detail": "Order not found"})
    assert (await api.get("/api/orders/abc", headers=buyer.headers)).status_code == 422
    assert (await api.get("/api/orders", headers=stranger.headers)).json() == []


async def test_an_event_cancelled_during_the_charge_is_the_refusal_given(
    api: httpx.AsyncClient, system: System
) -> None:
    """The charge goes through, then the sale finds the event cancelled (its cart lines gone
    with it): the money is given back and the answer is R1, not an R4 that says plenty left."""
    event, buyer = await shop(api, tickets=50)
    assert (await add(api, buyer, event.type_id, 2)).status_code == 200
    async with holding(system, "LOCK TABLE ordering.payments IN EXCLUSIVE MODE"):
        paying = asyncio.ensure_future(api.post("/api/cart/checkout", headers=buyer.headers))
        await waiting_for_lock(system, '%INSERT INTO "ordering".payments%', paying)
        cancelled = await api.delete(
            f"/api/events/{event.event_id}", headers=event.organizer.headers
        )
        assert cancelled.status_code == 200, cancelled.text
    refused = await paying
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": f"Event '{event.name}' has been cancelled."},
    )
    rows = await db_rows(
        system,
        "SELECT p.amount, p.refunded FROM ordering.payments p JOIN ordering.orders o"
        " ON p.authorize_key = 'order-' || o.order_id WHERE o.user_id = :u",
        u=buyer.user_id,
    )
    assert [(row.amount, row.refunded) for row in rows] == [(30, 30)]
