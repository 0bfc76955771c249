"""Listing, repricing and withdrawing a ticket (API.md §9.4, §9.5) through the gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.actors import active_customer, admin_token, bearer, sign_in
from tests.support.resale_actors import (
    Holder,
    holder,
    listed,
    marketplace,
    my_tickets,
    purchase,
    resale_charges,
    resell,
    withdraw,
)
from tests.support.shop import (
    db_rows,
    eventually,
    holding,
    iso,
    ticket_code,
    waiting_for_lock,
)
from tests.support.system import System

TICKET_DETAILS = {
    "ticket_id",
    "type_id",
    "seat",
    "owner_id",
    "resell_price",
    "original_price",
    "event_name",
    "event_start_date",
    "event_location",
    "ticket_type_description",
    "event_id",
    "status",
}


async def moved_into_the_past(api: httpx.AsyncClient, seller: Holder) -> httpx.Response:
    """The organizer moves the seller's event into the past: it has ended (§1.4)."""
    now = datetime.now(UTC)
    return await api.put(
        f"/api/events/{seller.event.event_id}",
        json={
            "start_date": iso(now - timedelta(hours=3)),
            "end_date": iso(now - timedelta(hours=1)),
        },
        headers=seller.event.organizer.headers,
    )


async def test_buy_then_list_at_once_answers_full_ticket_details(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    seller = await holder(api, admin)  # checkout answered; no pause before listing
    response = await resell(api, seller.account, seller.ticket_id, 60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TICKET_DETAILS
    assert body["resell_price"] == 60.0
    assert body["owner_id"] == seller.account.user_id
    assert body["original_price"] == 50.0
    assert body["event_name"] == seller.event.name
    assert body["ticket_type_description"] == "Standard Ticket"
    assert body["status"] == "valid"
    assert body["seat"] is None
    assert body["event_id"] == seller.event.event_id
    assert "+" not in body["event_start_date"] and not body["event_start_date"].endswith("Z")
    # ordering's ticket list shows the listing too (it follows resale's events)
    mine = await eventually(
        lambda: my_tickets(api, seller.account, ticket_id=seller.ticket_id, is_on_resale=True)
    )
    assert mine and mine[0]["resell_price"] == 60.0


async def test_relisting_reprices_the_same_listing(api: httpx.AsyncClient, system: System) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    again = await resell(api, seller.account, seller.ticket_id, "55.555")
    assert again.status_code == 200, again.text
    assert again.json()["resell_price"] == 55.56  # rounded half-up to cents
    shown = (await marketplace(api, event_id=seller.event.event_id)).json()
    assert [(x["ticket_id"], x["resell_price"]) for x in shown] == [(seller.ticket_id, 55.56)]
    types = await db_rows(
        system,
        "SELECT type FROM resale.outbox WHERE aggregate_id = :t ORDER BY id",
        t=str(seller.ticket_id),
    )
    assert [r.type for r in types] == ["resale.ListingCreated", "resale.ListingRepriced"]


async def test_listing_errors_in_order(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    seller = await holder(api, admin)
    other = await active_customer(api, admin)
    tid = seller.ticket_id
    url = f"/api/tickets/{tid}/resell"

    anonymous = await api.post(url, json={"price": 10})
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Not authenticated"}
    bad = await api.post(url, json={"price": "ten"}, headers=seller.account.headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "price"]
    assert (
        await api.post("/api/tickets/abc/resell", json={"price": 1}, headers=seller.account.headers)
    ).status_code == 422
    for missing in (0, -1, 2**31, 2**31 - 1):
        r = await resell(api, seller.account, missing, 10)
        assert (r.status_code, r.json()) == (404, {"detail": "Ticket not found"}), missing
    not_mine = await resell(api, other, tid, 10)
    assert (not_mine.status_code, not_mine.json()) == (403, {"detail": "Not the ticket owner"})
    # a body ticket_id is ignored: the path names the ticket
    still_not_mine = await api.post(
        f"/api/tickets/{tid}/resell", json={"price": 10, "ticket_id": 1}, headers=other.headers
    )
    assert still_not_mine.status_code == 403
    for body in (None, {}, {"price": None}):
        r = await api.post(url, json=body, headers=seller.account.headers)
        assert (r.status_code, r.json()) == (400, {"detail": "Resell price required"}), body
    no_body = await api.post(url, headers=seller.account.headers)
    assert (no_body.status_code, no_body.json()["detail"]) == (400, "Resell price required")
    for price in (0, -5):
        r = await resell(api, seller.account, tid, price)
        assert (r.status_code, r.json()["detail"]) == (400, "Resale price must be greater than 0")
    # no cap in this deployment unless the event sets one: any positive price lists
    assert (await resell(api, seller.account, tid, 99999999.99)).status_code == 200


async def test_price_cap_of_the_event(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    seller = await holder(api, admin, cap=150, price=33.33)
    over = await resell(api, seller.account, seller.ticket_id, 50)
    assert (over.status_code, over.json()) == (
        400,
        {"detail": "Resale price exceeds the cap of 49.99"},
    )
    at_cap = await resell(api, seller.account, seller.ticket_id, 49.99)
    assert at_cap.status_code == 200 and at_cap.json()["resell_price"] == 49.99


async def test_withdraw(api: httpx.AsyncClient, system: System) -> None:
    admin = await admin_token(api)
    seller = await holder(api, admin)
    other = await active_customer(api, admin)
    tid = seller.ticket_id

    assert (await api.delete(f"/api/tickets/{tid}/resell")).status_code == 401
    assert (
        await api.delete("/api/tickets/x/resell", headers=seller.account.headers)
    ).status_code == 422
    unknown = await withdraw(api, seller.account, 0)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Ticket not found"})
    not_listed = await withdraw(api, seller.account, tid)
    assert (not_listed.status_code, not_listed.json()) == (
        400,
        {"detail": "Ticket is not listed for resale"},
    )
    assert (await resell(api, seller.account, tid, 70)).status_code == 200
    not_mine = await withdraw(api, other, tid)
    assert (not_mine.status_code, not_mine.json()) == (403, {"detail": "Not the ticket owner"})
    done = await withdraw(api, seller.account, tid)
    assert done.status_code == 200, done.text
    assert done.json()["resell_price"] is None and set(done.json()) == TICKET_DETAILS
    assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
    assert (await withdraw(api, seller.account, tid)).json() == {
        "detail": "Ticket is not listed for resale"
    }
    types = await db_rows(
        system,
        "SELECT type FROM resale.outbox WHERE aggregate_id = :t ORDER BY id",
        t=str(tid),
    )
    assert [r.type for r in types][-1] == "resale.ListingCancelled"
    # a withdrawn ticket can be listed again, as a new listing
    assert (await resell(api, seller.account, tid, 65)).status_code == 200


async def test_ended_event_cannot_be_listed_and_leaves_the_market(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    moved = await moved_into_the_past(api, seller)
    assert moved.status_code == 200, moved.text
    # at once: resale catches up with catalog before answering
    again = await resell(api, seller.account, seller.ticket_id, 61)
    assert (again.status_code, again.json()) == (
        400,
        {"detail": "Cannot resell tickets for an event that has ended"},
    )
    assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
    # the listing is no longer active (§10): the ticket shows none, and there is none to withdraw
    gone = await withdraw(api, seller.account, seller.ticket_id)
    assert (gone.status_code, gone.json()) == (400, {"detail": "Ticket is not listed for resale"})

    async def shown_unlisted() -> bool:
        [ticket] = await my_tickets(api, seller.account)
        listed = await my_tickets(api, seller.account, is_on_resale="true")
        return ticket["resell_price"] is None and listed == []

    assert await eventually(shown_unlisted)  # ordering learns the new end from catalog's event


async def test_a_listing_of_an_event_just_ended_is_not_in_the_way_at_the_door(
    api: httpx.AsyncClient, system: System
) -> None:
    """§9.3's 409 "Ticket is listed for resale" is for an active listing (§10): once the event
    has been moved into the past, the scan admits the ticket, even while ordering has not
    applied catalog's event yet (its inbox locked for half a second): it catches up first."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    code = await ticket_code(system, seller.ticket_id)
    async with holding(system, "LOCK TABLE ordering.inbox IN EXCLUSIVE MODE"):
        moved = await moved_into_the_past(api, seller)
        assert moved.status_code == 200, moved.text
        scanning = asyncio.create_task(
            api.post(
                "/api/tickets/check-in",
                json={"code": code},
                headers=seller.event.organizer.headers,
            )
        )
        await asyncio.sleep(0.5)
    scan = await scanning
    assert scan.status_code == 200, scan.text


async def test_cancelled_event_withdraws_listings_and_tells_the_seller(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    cancelled = await api.delete(
        f"/api/events/{seller.event.event_id}", headers=seller.event.organizer.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    listing_after = await resell(api, seller.account, seller.ticket_id, 61)
    # ordering refunds the ticket asynchronously: until then the event's cancellation answers
    assert listing_after.status_code == 400
    assert listing_after.json()["detail"] in (
        "Cannot resell tickets for a cancelled event",
        "Ticket is no longer valid",
    )
    assert (await marketplace(api, event_id=seller.event.event_id)).json() == []

    async def withdrawn_notice() -> bool:
        return any("withdrawn" in str(m["Subject"]) for m in system.mails(seller.account.email))

    assert await eventually(withdrawn_notice)
    refunded = await eventually(
        lambda: my_tickets(api, seller.account, ticket_id=seller.ticket_id, status="refunded")
    )
    assert refunded
    final = await resell(api, seller.account, seller.ticket_id, 61)
    assert final.json() == {"detail": "Ticket is no longer valid"}


async def test_banned_sellers_listings_are_withdrawn(api: httpx.AsyncClient) -> None:
    """At once (§3.15 "effective immediately everywhere", §1.8): the ban's answer waits for
    resale to apply it, so neither the marketplace nor the event page offers the listing a
    moment later. Three times: banned, unbanned, listed again, banned again."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    account = seller.account
    for price in (61, 62, 0):
        banned = await api.post(f"/api/auth/ban-user/{account.user_id}", headers=bearer(admin))
        assert banned.status_code == 200, banned.text
        assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
        page = await api.get(f"/api/events/{seller.event.event_id}")
        assert page.status_code == 200 and page.json()["resale"]["listing_count"] == 0, page.text
        if price:
            lifted = await api.post(
                f"/api/auth/unban-user/{account.user_id}", headers=bearer(admin)
            )
            assert lifted.status_code == 200, lifted.text
            account = await sign_in(api, account)  # tokens from before the ban stay invalid
            again = await resell(api, account, seller.ticket_id, price)
            assert again.status_code == 200, again.text


async def ban_seller(api: httpx.AsyncClient, system: System, admin: str, seller: Holder) -> None:
    banned = await api.post(f"/api/auth/ban-user/{seller.account.user_id}", headers=bearer(admin))
    assert banned.status_code == 200, banned.text


async def cancel_event(api: httpx.AsyncClient, system: System, admin: str, seller: Holder) -> None:
    cancelled = await api.delete(
        f"/api/events/{seller.event.event_id}", headers=seller.event.organizer.headers
    )
    assert cancelled.status_code == 200, cancelled.text


async def check_in_after_the_end(
    api: httpx.AsyncClient, system: System, admin: str, seller: Holder
) -> None:
    """The door admits a ticket whose listing a buyer has claimed only once its event has
    ended: before, the listing is active and in the way (§9.3's 409)."""
    moved = await moved_into_the_past(api, seller)
    assert moved.status_code == 200, moved.text
    scan = await api.post(
        "/api/tickets/check-in",
        json={"code": await ticket_code(system, seller.ticket_id)},
        headers=seller.event.organizer.headers,
    )
    assert scan.status_code == 200, scan.text


# What withdraws a seller's listings (README: "seller banned, event cancelled, ticket refunded
# or used"), by the reason recorded. A ticket is refunded only when its event is cancelled
# (API.md §11, ordering.TicketRefunded), where the cancellation's reason comes first.
WITHDRAWALS = {
    "seller_banned": ban_seller,
    "event_cancelled": cancel_event,
    "ticket_used": check_in_after_the_end,
}


@pytest.mark.parametrize("reason", WITHDRAWALS)
async def test_a_listing_withdrawn_while_claimed_is_not_sold_whatever_the_charge_did(
    api: httpx.AsyncClient, system: System, reason: str
) -> None:
    """§3.15, §6.5, §9.3, §10: a ban, the event's cancellation or the ticket's check-in
    withdraws the listing. One a buyer had claimed waits for that buyer's charge (held here at the
    processor, its ledger locked, until resale has applied the withdrawal), and then is
    cancelled for that reason (ListingCancelled, the seller told), not put back on sale, and
    not sold: a declined card is a 402; a charge that went through is given back in full,
    409 "Ticket is no longer for sale" (as §10.3 answers a ticket checked in or refunded
    before its transfer), no payout, the ticket the seller's still. Before, the first went
    back on sale and the second paid the banned seller (or, for a cancelled event, paid the
    seller and refunded the holder both)."""
    admin = await admin_token(api)
    for token, answer in (
        ("tok_card_declined", (402, {"detail": "Payment declined"})),
        ("tok_visa", (409, {"detail": "Ticket is no longer for sale"})),
    ):
        seller = await listed(api, admin, price=60)
        buyer = await active_customer(api, admin)
        async with holding(system, "LOCK TABLE resale.payments IN EXCLUSIVE MODE"):
            buying = asyncio.create_task(
                purchase(api, buyer, seller.ticket_id, payment_token=token)
            )
            await waiting_for_lock(system, '%INSERT INTO "resale".payments%', buying)
            await WITHDRAWALS[reason](api, system, admin, seller)

            async def marked(ticket_id: int = seller.ticket_id) -> bool:
                rows = await db_rows(
                    system,
                    "SELECT withdrawn_for FROM resale.listings WHERE ticket_id = :t",
                    t=ticket_id,
                )
                return [r.withdrawn_for for r in rows] == [reason]

            assert await eventually(marked)
        answered = await buying
        assert (answered.status_code, answered.json()) == answer, token
        states = await db_rows(
            system, "SELECT state FROM resale.listings WHERE ticket_id = :t", t=seller.ticket_id
        )
        assert [r.state for r in states] == ["cancelled"]
        assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
        cancelled = await db_rows(
            system,
            "SELECT payload->>'reason' AS reason FROM resale.outbox"
            " WHERE type = 'resale.ListingCancelled' AND aggregate_id = :t",
            t=str(seller.ticket_id),
        )
        assert [r.reason for r in cancelled] == [reason]
        charges = [
            (c.state, c.amount, c.refunded) for c in await resale_charges(system, seller.ticket_id)
        ]
        assert charges == (
            [("declined", 60, 0)] if token == "tok_card_declined" else [("captured", 60, 60)]
        )
        payouts = await db_rows(
            system,
            "SELECT p.state FROM resale.payouts p JOIN resale.purchases u USING (purchase_id)"
            " WHERE u.ticket_id = :t",
            t=seller.ticket_id,
        )
        assert payouts == []
        owners = await db_rows(
            system, "SELECT owner_id FROM ordering.tickets WHERE ticket_id = :t", t=seller.ticket_id
        )
        assert [r.owner_id for r in owners] == [seller.account.user_id]

        async def withdrawn_notice(email: str = seller.account.email) -> bool:
            return any("withdrawn" in str(m["Subject"]) for m in system.mails(email))

        assert await eventually(withdrawn_notice)


async def test_a_ban_withdraws_the_sellers_listings_before_the_next_purchase(
    api: httpx.AsyncClient, system: System
) -> None:
    """§3.15: a ban is effective at once everywhere, and §1.8: a request after its 200 sees
    it. Resale is kept from applying auth's UserBanned (its inbox locked) for half a second
    after the ban: a purchase made meanwhile waits for it, so it is refused, instead of
    selling a banned seller's ticket; the market then shows nothing."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    buyer = await active_customer(api, admin)
    async with holding(system, "LOCK TABLE resale.inbox IN EXCLUSIVE MODE"):
        banned = await api.post(
            f"/api/auth/ban-user/{seller.account.user_id}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert banned.status_code == 200, banned.text
        buying = asyncio.create_task(purchase(api, buyer, seller.ticket_id))
        await asyncio.sleep(0.5)
    bought = await buying
    assert (bought.status_code, bought.json()) == (400, {"detail": "Ticket is not for resale"})
    assert (await marketplace(api, event_id=seller.event.event_id)).json() == []
    assert await resale_charges(system, seller.ticket_id) == []


async def test_an_event_just_ended_has_no_listing_to_show_or_withdraw(
    api: httpx.AsyncClient, system: System
) -> None:
    """§1.8, §10: once the organizer's move of the event into the past has answered, the
    seller's listings show none and a withdrawal finds none (400), even while resale has not
    applied catalog's event yet (its inbox locked for half a second)."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    mine = await api.get("/api/resale/my-listings", headers=seller.account.headers)
    assert [x["ticket_id"] for x in mine.json()] == [seller.ticket_id]
    async with holding(system, "LOCK TABLE resale.inbox IN EXCLUSIVE MODE"):
        moved = await moved_into_the_past(api, seller)
        assert moved.status_code == 200, moved.text
        shown = asyncio.create_task(
            api.get("/api/resale/my-listings", headers=seller.account.headers)
        )
        withdrawn = asyncio.create_task(withdraw(api, seller.account, seller.ticket_id))
        await asyncio.sleep(0.5)
    assert (await shown).json() == []
    gone = await withdrawn
    assert (gone.status_code, gone.json()) == (400, {"detail": "Ticket is not listed for resale"})
