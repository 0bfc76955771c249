"""Buying a listed ticket (API.md §10.3) through the gateway, and the full path of a resold
ticket: the new owner sees it and enters with its new code, the old code is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

import asyncpg
import httpx

from tests.support.actors import active_customer, admin_token, verified_organizer
from tests.support.resale_actors import (
    listed,
    marketplace,
    my_tickets,
    purchase,
    resale_charges,
    resell,
)
from tests.support.shop import db_rows, driver_dsn, eventually, ticket_code, waiting_for_lock
from tests.support.system import System


async def test_full_path_buy_list_resell_check_in(api: httpx.AsyncClient, system: System) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=80)
    buyer = await active_customer(api, admin)
    tid = seller.ticket_id
    old_code = await ticket_code(system, tid)

    response = await purchase(api, buyer, tid, expected_price=80)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["owner_id"] == buyer.user_id and body["resell_price"] is None
    assert body["ticket_id"] == tid and body["status"] == "valid"
    assert body["original_price"] == 50.0

    # at once: the buyer sees the ticket, the seller no longer does
    assert [t["ticket_id"] for t in await my_tickets(api, buyer, ticket_id=tid)] == [tid]
    assert await my_tickets(api, seller.account, ticket_id=tid) == []
    assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
    pdf = await api.get(f"/api/tickets/{tid}/download", headers=buyer.headers)
    assert pdf.status_code == 200 and base64.b64decode(pdf.json()["pdf_data"]).startswith(b"%PDF")

    new_code = await ticket_code(system, tid)
    assert new_code != old_code
    door = seller.event.organizer.headers
    refused = await api.post("/api/tickets/check-in", json={"code": old_code}, headers=door)
    assert (refused.status_code, refused.json()) == (404, {"detail": "Invalid ticket code"})
    entered = await api.post("/api/tickets/check-in", json={"code": new_code}, headers=door)
    assert entered.status_code == 200, entered.text
    assert entered.json()["ticket_id"] == tid

    # the seller was paid once (price minus the 5 % fee), the buyer charged once
    payouts = await db_rows(
        system,
        "SELECT p.seller_id, p.amount, p.fee, p.state FROM resale.payouts p "
        "JOIN resale.purchases s USING (purchase_id) WHERE s.ticket_id = :t",
        t=tid,
    )
    assert [(p.seller_id, float(p.amount), float(p.fee), p.state) for p in payouts] == [
        (seller.account.user_id, 76.0, 4.0, "payable")
    ]
    assert [(c.state, float(c.amount)) for c in await resale_charges(system, tid)] == [
        ("captured", 80.0)
    ]

    async def mailed() -> bool:
        name = seller.event.name
        sold = [
            m
            for m in system.mails(seller.account.email)
            if str(m["Subject"]) == f"Your ticket for {name} was sold"
        ]
        bought = [
            m for m in system.mails(buyer.email) if str(m["Subject"]) == f"Your ticket for {name}"
        ]
        return len(sold) == 1 and len(bought) == 1

    assert await eventually(mailed)
    # the used ticket cannot be listed again by its new owner
    relist = await resell(api, buyer, tid, 60)
    assert (relist.status_code, relist.json()) == (400, {"detail": "Ticket is no longer valid"})


async def test_new_owner_can_list_at_once_and_sell_on(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=70)
    first, second = await active_customer(api, admin), await active_customer(api, admin)
    assert (await purchase(api, first, seller.ticket_id)).status_code == 200
    relisted = await resell(api, first, seller.ticket_id, 75)
    assert relisted.status_code == 200, relisted.text
    assert relisted.json()["owner_id"] == first.user_id
    # the old owner can neither reprice nor withdraw it
    assert (await resell(api, seller.account, seller.ticket_id, 10)).status_code == 403
    bought = await purchase(api, second, seller.ticket_id, expected_price=75)
    assert bought.status_code == 200 and bought.json()["owner_id"] == second.user_id


async def test_purchase_errors_in_order(api: httpx.AsyncClient, system: System) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=80)
    buyer = await active_customer(api, admin)
    organizer = await verified_organizer(api, admin)
    tid = seller.ticket_id

    anonymous = await api.post("/api/resale/purchase", json={"ticket_id": tid})
    assert (anonymous.status_code, anonymous.json()) == (401, {"detail": "Not authenticated"})
    not_customer = await purchase(api, organizer, tid)
    assert (not_customer.status_code, not_customer.json()) == (
        403,
        {"detail": "Only customers can purchase tickets"},
    )
    for body in (
        {},
        {"ticket_id": "x"},
        {"ticket_id": 2**31},
        {"ticket_id": tid, "expected_price": -1},
        {"ticket_id": tid, "payment_token": "x" * 256},  # as checkout's (§8.4)
    ):
        r = await api.post("/api/resale/purchase", json=body, headers=buyer.headers)
        assert r.status_code == 422, body
    bad_key = await purchase(api, buyer, tid, key="x" * 256)
    assert bad_key.status_code == 422
    for missing in (0, -3, 2**31 - 1):
        r = await purchase(api, buyer, missing)
        assert (r.status_code, r.json()) == (404, {"detail": "Ticket not found"})
    own = await purchase(api, seller.account, tid)
    assert (own.status_code, own.json()) == (400, {"detail": "Cannot buy your own ticket"})
    unlisted = await listed(api, admin, price=10)
    assert (
        await api.delete(
            f"/api/tickets/{unlisted.ticket_id}/resell", headers=unlisted.account.headers
        )
    ).status_code == 200
    r = await purchase(api, buyer, unlisted.ticket_id)
    assert (r.status_code, r.json()) == (400, {"detail": "Ticket is not for resale"})
    changed = await purchase(api, buyer, tid, expected_price=79.99)
    assert (changed.status_code, changed.json()) == (409, {"detail": "Price changed"})

    declined = await purchase(api, buyer, tid, payment_token="tok_card_declined")
    assert (declined.status_code, declined.json()) == (402, {"detail": "Payment declined"})
    down = await purchase(api, buyer, tid, payment_token="tok_processor_unavailable")
    assert (down.status_code, down.json()) == (503, {"detail": "Payment service unavailable"})
    # a failed charge puts the listing back on the market; nothing was taken
    shown = (await marketplace(api, event_id=seller.event.event_id)).json()
    assert [x["ticket_id"] for x in shown] == [tid]
    assert all(c.state != "captured" for c in await resale_charges(system, tid))

    assert (await purchase(api, buyer, tid, expected_price=80)).status_code == 200
    latecomer = await active_customer(api, admin)
    late = await purchase(api, latecomer, tid)
    assert (late.status_code, late.json()) == (409, {"detail": "Ticket is no longer for sale"})
    # In §10.3's order "Price changed" comes first: a latecomer who named another price is
    # told that, and one who named the price sold at, that another buyer won.
    stale = await purchase(api, latecomer, tid, expected_price=79.99)
    assert (stale.status_code, stale.json()) == (409, {"detail": "Price changed"})
    named = await purchase(api, latecomer, tid, expected_price=80)
    assert (named.status_code, named.json()) == (409, {"detail": "Ticket is no longer for sale"})


async def test_idempotency_key_gives_the_stored_answer_and_one_charge(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=42)
    buyer = await active_customer(api, admin)
    first = await purchase(api, buyer, seller.ticket_id, key="buy-1")
    again = await purchase(api, buyer, seller.ticket_id, key="buy-1")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = await purchase(api, buyer, seller.ticket_id, key="buy-1", expected_price=42)
    assert (other.status_code, other.json()) == (
        409,
        {"detail": "Idempotency-Key reused with a different request"},
    )
    assert len(await resale_charges(system, seller.ticket_id)) == 1


async def test_a_key_whose_charge_could_not_be_made_is_tried_again_under_it(
    api: httpx.AsyncClient, system: System
) -> None:
    """§1.6: a 503 is not stored, so the client may send the purchase again under the same key:
    the processor is asked again (not the old failure replayed), and the key, freed, may name
    another ticket."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=30)
    buyer = await active_customer(api, admin)
    down = await purchase(
        api, buyer, seller.ticket_id, key="retry-1", payment_token="tok_processor_unavailable"
    )
    assert (down.status_code, down.json()) == (503, {"detail": "Payment service unavailable"})
    bought = await purchase(api, buyer, seller.ticket_id, key="retry-1")
    assert bought.status_code == 200, bought.text
    assert bought.json()["owner_id"] == buyer.user_id
    assert (await purchase(api, buyer, seller.ticket_id, key="retry-1")).json() == bought.json()
    assert [c.state for c in await resale_charges(system, seller.ticket_id)] == ["captured"]

    other = await listed(api, admin, price=20)
    unavailable = {"payment_token": "tok_processor_unavailable"}
    assert (
        await purchase(api, buyer, other.ticket_id, "retry-2", **unavailable)
    ).status_code == 503
    third = await listed(api, admin, price=25)
    moved = await purchase(api, buyer, third.ticket_id, key="retry-2")
    assert moved.status_code == 200, moved.text
    assert moved.json()["ticket_id"] == third.ticket_id
    assert (await purchase(api, buyer, other.ticket_id, key="retry-2")).status_code == 409
    assert await resale_charges(system, other.ticket_id) == []


async def test_a_follower_of_a_202_answered_503_frees_the_key_for_a_new_attempt(
    api: httpx.AsyncClient, system: System
) -> None:
    """A repeat of a request answered 202 follows its purchase; if that purchase failed for
    want of the processor (crash recovery voided it), the follower answers 503 and the 202
    gives way (only it: a new request's claim of the key is not touched), so the next repeat
    is a new attempt rather than the same 503 for the key's 24 hours."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=35)
    buyer = await active_customer(api, admin)
    body = json.dumps({"ticket_id": seller.ticket_id}).encode()
    path = "/api/resale/purchase"
    digest = hashlib.sha256(b"POST" + b"\0" + path.encode() + b"\0" + b"" + b"\0" + body)
    conn = await asyncpg.connect(driver_dsn(system))
    try:
        listing = await conn.fetchrow(
            "SELECT listing_id, event_id, seller_id, price, currency FROM resale.listings"
            " WHERE ticket_id = $1 AND state = 'active'",
            seller.ticket_id,
        )
        await conn.execute(  # what recovery leaves of a purchase whose request died
            "INSERT INTO resale.purchases (listing_id, ticket_id, event_id, buyer_id, seller_id,"
            " price, currency, status, failure_reason, idempotency_key, completed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'failed', 'payment_unavailable', 'follow-1',"
            " now())",
            listing["listing_id"],
            seller.ticket_id,
            listing["event_id"],
            buyer.user_id,
            listing["seller_id"],
            listing["price"],
            listing["currency"],
        )
        await conn.execute(  # the 202 its retry stored
            "INSERT INTO resale.idempotency_keys (user_id, method, path, key, fingerprint,"
            " state, status_code, body) VALUES ($1, 'POST', $2, 'follow-1', $3, 'done', 202,"
            " $4)",
            buyer.user_id,
            path,
            digest.hexdigest(),
            b'{"detail":"Purchase is being processed"}',
        )
        headers = {**buyer.headers, "Idempotency-Key": "follow-1"}
        headers["content-type"] = "application/json"
        followed = await api.post(path, content=body, headers=headers)
        assert (followed.status_code, followed.json()) == (
            503,
            {"detail": "Payment service unavailable"},
        )
        again = await api.post(path, content=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["owner_id"] == buyer.user_id
        repeated = await api.post(path, content=body, headers=headers)
        assert (repeated.status_code, repeated.json()) == (200, again.json())
    finally:
        await conn.close()


async def test_purchase_status_is_for_the_buyer_only(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=30)
    buyer = await active_customer(api, admin)
    assert (await purchase(api, buyer, seller.ticket_id)).status_code == 200
    rows = await db_rows(
        system, "SELECT purchase_id FROM resale.purchases WHERE ticket_id = :t", t=seller.ticket_id
    )
    pid = rows[0].purchase_id
    mine = await api.get(f"/api/resale/purchases/{pid}", headers=buyer.headers)
    assert mine.status_code == 200
    assert mine.json() == {"purchase_id": pid, "ticket_id": seller.ticket_id, "status": "completed"}
    for who in (seller.account, await active_customer(api, admin)):
        r = await api.get(f"/api/resale/purchases/{pid}", headers=who.headers)
        assert (r.status_code, r.json()) == (404, {"detail": "Purchase not found"})
    assert (await api.get(f"/api/resale/purchases/{pid}")).status_code == 401
    assert (await api.get("/api/resale/purchases/abc", headers=buyer.headers)).status_code == 422
    assert (await api.get("/api/resale/purchases/0", headers=buyer.headers)).status_code == 404


_REPRICE = "UPDATE resale.listings SET price = 55 WHERE ticket_id = $1 AND state = 'active'"
# Withdrawn and listed again at 55: the same listing closed, a new one open.
_RELIST = (
    "UPDATE resale.listings SET state = 'cancelled' WHERE ticket_id = $1 AND state = 'active'",
    "INSERT INTO resale.listings (ticket_id, seller_id, event_id, type_id, price, currency,"
    " original_price, seat, state, event_name, event_start, event_end)"
    " SELECT ticket_id, seller_id, event_id, type_id, 55, currency, original_price, seat,"
    " 'active', event_name, event_start, event_end FROM resale.listings"
    " WHERE ticket_id = $1 ORDER BY listing_id DESC LIMIT 1",
)


async def test_a_listing_changed_during_the_claim_sells_at_the_new_price_unless_one_was_named(
    api: httpx.AsyncClient, system: System
) -> None:
    """§10.3: 409 "Price changed" only when `expected_price` is given and differs. The seller's
    reprice, or withdrawal and new listing, commits while the buyer's claim waits for the
    listing's row (after the buyer's read saw it at 50): a buyer who named no price buys at
    the new one, and pays it."""
    admin = await admin_token(api)
    conn = await asyncpg.connect(driver_dsn(system))
    try:
        for change in ((_REPRICE,), _RELIST):
            for named in (None, 50):
                seller = await listed(api, admin, price=50)
                buyer = await active_customer(api, admin)
                body: dict[str, Any] = {} if named is None else {"expected_price": named}
                async with conn.transaction():
                    for statement in change:
                        await conn.execute(statement, seller.ticket_id)
                    buying = asyncio.create_task(purchase(api, buyer, seller.ticket_id, **body))
                    await waiting_for_lock(system, "UPDATE resale.listings%", buying)
                answer = await buying
                charges = await resale_charges(system, seller.ticket_id)
                if named is None:
                    assert answer.status_code == 200, (change, answer.text)
                    assert answer.json()["owner_id"] == buyer.user_id
                    assert [(c.state, c.amount) for c in charges] == [("captured", 55)]
                else:
                    assert (answer.status_code, answer.json()) == (
                        409,
                        {"detail": "Price changed"},
                    ), change
                    assert charges == []
    finally:
        await conn.close()
