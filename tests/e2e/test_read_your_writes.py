"""Read-your-writes across services (API.md §1.8) where the answer is a "yes" or a listing, not
a refusal, and what the review of 2026-11-27 found answered as if the write had not happened:
each write below is followed at once, many times over, by the read that depends on it. Also the
ids of API.md §1.2 shown as sent, and the list header of §1.5 on the cart."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from services.kernel.db import create_engine
from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    bearer,
    register_customer,
    sign_in,
    verified_organizer,
)
from tests.support.pdf import text_runs
from tests.support.shop import (
    OnSale,
    add,
    buy,
    db_rows,
    event_on_sale,
    eventually,
    holding,
    iso,
    location,
    ticket_code,
    ticket_type,
    waiting_for_lock,
)
from tests.support.system import System

ROUNDS = 5


async def cast(api: httpx.AsyncClient) -> tuple[str, Account, Account]:
    """An administrator's token, a verified organizer and an active customer."""
    admin = await admin_token(api)
    return admin, await verified_organizer(api, admin), await active_customer(api, admin)


async def test_a_listing_put_up_repriced_or_withdrawn_shows_at_once_in_the_ticket_list(
    api: httpx.AsyncClient,
) -> None:
    admin, organizer, owner = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=40)
    [ticket] = await buy(api, owner, event.type_id)
    tid = ticket["ticket_id"]

    async def shown_price() -> float | None:
        mine = await api.get("/api/tickets", params={"ticket_id": tid}, headers=owner.headers)
        assert mine.status_code == 200, mine.text
        return mine.json()[0]["resell_price"]  # type: ignore[no-any-return]

    for i in range(ROUNDS):
        listed = await api.post(
            f"/api/tickets/{tid}/resell", json={"price": 41 + i}, headers=owner.headers
        )
        assert listed.status_code == 200, listed.text
        assert await shown_price() == 41 + i
        repriced = await api.post(
            f"/api/tickets/{tid}/resell", json={"price": 30 + i}, headers=owner.headers
        )
        assert repriced.status_code == 200, repriced.text
        assert await shown_price() == 30 + i
        withdrawn = await api.delete(f"/api/tickets/{tid}/resell", headers=owner.headers)
        assert withdrawn.status_code == 200, withdrawn.text
        assert await shown_price() is None


async def test_the_door_sees_a_listing_put_up_or_withdrawn_at_once(
    api: httpx.AsyncClient, system: System
) -> None:
    admin, organizer, owner = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=40)
    tickets = await buy(api, owner, event.type_id, ROUNDS)
    for ticket in tickets:
        tid, code = ticket["ticket_id"], await ticket_code(system, ticket["ticket_id"])
        listed = await api.post(
            f"/api/tickets/{tid}/resell", json={"price": 45}, headers=owner.headers
        )
        assert listed.status_code == 200, listed.text
        refused = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert (refused.status_code, refused.json()) == (
            409,
            {"detail": "Ticket is listed for resale"},
        )
        withdrawn = await api.delete(f"/api/tickets/{tid}/resell", headers=owner.headers)
        assert withdrawn.status_code == 200, withdrawn.text
        scan = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert scan.status_code == 200, scan.text
        assert scan.json()["message"] == "Ticket checked in"


async def test_a_price_change_shows_at_once_in_the_cart(api: httpx.AsyncClient) -> None:
    admin, organizer, buyer = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=30)
    assert (await add(api, buyer, event.type_id)).status_code == 200
    for i in range(ROUNDS):
        price = 50 + i
        changed = await api.put(
            f"/api/ticket-types/{event.type_id}", json={"price": price}, headers=organizer.headers
        )
        assert changed.status_code == 200, changed.text
        lines = await api.get("/api/cart/items", headers=buyer.headers)
        assert lines.status_code == 200, lines.text
        assert [line["ticket_type"]["price"] for line in lines.json()] == [price]
        assert lines.headers["X-Total-Count"] == "1"


async def test_a_venue_renamed_a_moment_before_shows_at_once_on_the_holders_tickets(
    api: httpx.AsyncClient,
) -> None:
    """A rename reaches ordering as its events' EventUpdated; the administrator's 200 waits
    for the services that show it, as an event's own change does."""
    admin, organizer, holder = await cast(api)
    event = await event_on_sale(api, admin, organizer)
    await buy(api, holder, event.type_id)
    venue = (await api.get(f"/api/events/{event.event_id}")).json()["location_id"]
    for i in range(ROUNDS):
        name = f"Hall {i} {event.name}"[:255]
        renamed = await api.put(
            f"/api/locations/{venue}", json={"name": name}, headers=bearer(admin)
        )
        assert renamed.status_code == 200, renamed.text
        mine = await api.get("/api/tickets", headers=holder.headers)
        assert [t["event_location"] for t in mine.json()] == [name]


async def test_a_name_changed_a_moment_before_is_the_holder_on_the_ticket_pdf(
    api: httpx.AsyncClient,
) -> None:
    """Auth's profile change reaches ordering as UserProfileUpdated; its 200 waits for it."""
    admin, organizer, holder = await cast(api)
    event = await event_on_sale(api, admin, organizer)
    [ticket] = await buy(api, holder, event.type_id)
    for i in range(ROUNDS):
        renamed = await api.put(
            "/api/user/update-profile",
            json={"first_name": f"Zed{i}", "last_name": f"Quill{i}"},
            headers=holder.headers,
        )
        assert renamed.status_code == 200, renamed.text
        pdf = await api.get(f"/api/tickets/{ticket['ticket_id']}/download", headers=holder.headers)
        assert f"Zed{i} Quill{i}" in text_runs(base64.b64decode(pdf.json()["pdf_data"]))


async def test_a_type_deleted_a_moment_before_no_longer_counts_toward_the_event_limit(
    api: httpx.AsyncClient,
) -> None:
    """R5 counts the customer's held tickets of the event: a deleted type's lines, which
    ordering removes once it has catalog's event, must not refuse an add of another type."""
    admin, organizer, buyer = await cast(api)
    event = await event_on_sale(api, admin, organizer)
    for _ in range(ROUNDS):
        doomed = await ticket_type(api, organizer, event.event_id, max_count=50)
        assert (await add(api, buyer, doomed["type_id"], 20)).status_code == 200
        deleted = await api.delete(
            f"/api/ticket-types/{doomed['type_id']}", headers=organizer.headers
        )
        assert deleted.status_code == 200, deleted.text
        added = await add(api, buyer, event.type_id, 1)
        assert added.status_code == 200, added.text
        for line in (await api.get("/api/cart/items", headers=buyer.headers)).json():
            await api.delete(f"/api/cart/items/{line['cart_item_id']}", headers=buyer.headers)


async def answered_once_ordering_applied_it(
    api: httpx.AsyncClient,
    system: System,
    lock: tuple[str, str],
    applying: str,
    change: Callable[[OnSale], Awaitable[httpx.Response]],
) -> tuple[Account, OnSale]:
    """A customer holding a type of an event on sale in the cart; then an organizer's change
    made while another transaction holds a lock (`lock`: an SQL statement, and which id of the
    event it takes) that ordering's consumer needs to apply it: the consumer waits in its
    statement `applying`, and so does the change's answer, until the lock is released."""
    admin, organizer, buyer = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=30)
    assert (await add(api, buyer, event.type_id)).status_code == 200
    async with holding(system, lock[0], getattr(event, lock[1])):
        changing = asyncio.create_task(change(event))
        await waiting_for_lock(system, applying, changing)
        await asyncio.sleep(0.2)
        assert not changing.done(), "answered before ordering applied it"
    changed = await changing
    assert changed.status_code == 200, changed.text
    return buyer, event


async def test_a_price_changed_a_moment_before_a_checkout_is_the_price_paid(
    api: httpx.AsyncClient, system: System
) -> None:
    """API.md §7.3: a new price applies to later checkouts, here one of a cart that held the
    type before the change, made the moment the change is answered: catalog answers once
    ordering has applied it, however slow ordering's consumer is."""
    buyer, _ = await answered_once_ordering_applied_it(
        api,
        system,
        ("SELECT FROM ordering.ticket_types WHERE type_id = $1 FOR UPDATE", "type_id"),
        "%INSERT INTO ordering.ticket_types%",
        lambda event: api.put(
            f"/api/ticket-types/{event.type_id}",
            json={"price": 45},
            headers=event.organizer.headers,
        ),
    )
    bought = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert bought.status_code == 200, bought.text
    [order] = (await api.get("/api/orders", headers=buyer.headers)).json()
    assert (order["total_amount"], order["items"][0]["unit_price"]) == (45.0, 45.0)


async def test_an_event_cancelled_a_moment_before_a_checkout_sells_nothing(
    api: httpx.AsyncClient, system: System
) -> None:
    """API.md §1.8 with R1: a checkout the moment a cancellation is answered places no order
    and charges nothing: catalog answers once ordering has applied the cancellation."""
    buyer, _ = await answered_once_ordering_applied_it(
        api,
        system,
        ("SELECT FROM ordering.events WHERE event_id = $1 FOR SHARE", "event_id"),
        "%UPDATE ordering.events SET status%",
        lambda event: api.delete(f"/api/events/{event.event_id}", headers=event.organizer.headers),
    )
    bought = await api.post("/api/cart/checkout", headers=buyer.headers)
    assert bought.status_code == 400, bought.text
    assert (await api.get("/api/orders", headers=buyer.headers)).json() == []
    assert (await api.get("/api/tickets", headers=buyer.headers)).json() == []


async def test_an_empty_cart_is_a_list_with_its_count(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    buyer = await active_customer(api, admin)
    lines = await api.get("/api/cart/items/", headers=buyer.headers)
    assert (lines.status_code, lines.json(), lines.headers["X-Total-Count"]) == (200, [], "0")


async def test_an_id_out_of_range_is_named_as_sent_in_its_404(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    buyer = await active_customer(api, admin)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer)
    assert (await add(api, buyer, event.type_id)).status_code == 200  # a cart, so the item 404
    await location(api, admin)
    for sent in ("-5", "0", "99999999999", str(2**70)):
        put = await api.put(f"/api/locations/{sent}", json={"city": "Oslo"}, headers=bearer(admin))
        assert (put.status_code, put.json()) == (404, {"detail": f"Location '{sent}' not found"})
        gone = await api.delete(f"/api/locations/{sent}", headers=bearer(admin))
        assert (gone.status_code, gone.json()) == (404, {"detail": f"Location '{sent}' not found"})
        item = await api.delete(f"/api/cart/items/{sent}", headers=buyer.headers)
        assert (item.status_code, item.json()) == (
            404,
            {"detail": f"Item with ID {sent} not found in your cart"},
        )


async def test_a_rejected_organizer_is_refused_at_once_whatever_token_they_hold(
    api: httpx.AsyncClient, system: System
) -> None:
    """API.md §2.2: refused at once, at ordering's door as at catalog's writes, and banned is
    answered before "Organizer not verified" (§2.4's order)."""
    admin = await admin_token(api)
    buyer = await active_customer(api, admin)
    for _ in range(ROUNDS):
        organizer = await verified_organizer(api, admin)
        event = await event_on_sale(api, admin, organizer)
        [ticket] = await buy(api, buyer, event.type_id)
        code = await ticket_code(system, ticket["ticket_id"])
        me = (await api.get("/api/user/me", headers=organizer.headers)).json()
        decision = {"organizer_id": me["organizer_id"], "approve": False}
        rejected = await api.post(
            "/api/auth/verify-organizer", json=decision, headers=bearer(admin)
        )
        assert rejected.status_code == 200 and rejected.json()["account_state"] == "banned"
        scan = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert (scan.status_code, scan.json()) == (403, {"detail": "Account banned"})
        new_type = await api.post(
            "/api/ticket-types",
            json={"event_id": event.event_id, "max_count": 5, "price": 10, "currency": "USD"},
            headers=organizer.headers,
        )
        assert (new_type.status_code, new_type.json()) == (403, {"detail": "Account banned"})
        approved = await api.post(
            "/api/auth/verify-organizer", json={**decision, "approve": True}, headers=bearer(admin)
        )
        assert approved.status_code == 200 and approved.json()["account_state"] == "active"
        # A rejection is a ban (§2.2): tokens issued before it stay invalid once it is lifted
        # (§2.4, as after an unban, §3.16), at once, at auth and at the gateway (from auth's
        # answer, before its event); a new sign-in is let in.
        old = await api.get("/api/user/me", headers=organizer.headers)
        assert (old.status_code, old.json()) == (401, {"detail": "Token has been revoked"})
        scan = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert (scan.status_code, scan.json()) == (401, {"detail": "Token has been revoked"})
        organizer = await sign_in(api, organizer)
        scan = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert scan.status_code == 200, scan.text


async def test_an_event_moved_into_the_past_takes_its_listings_off_the_marketplace_at_once(
    api: httpx.AsyncClient,
) -> None:
    admin, organizer, seller = await cast(api)
    for _ in range(3):
        event = await event_on_sale(api, admin, organizer, price=40)
        [ticket] = await buy(api, seller, event.type_id)
        listed = await api.post(
            f"/api/tickets/{ticket['ticket_id']}/resell", json={"price": 45}, headers=seller.headers
        )
        assert listed.status_code == 200, listed.text
        market = {"event_id": event.event_id}
        shown = await api.get("/api/resale/marketplace", params=market)
        assert [m["ticket_id"] for m in shown.json()] == [ticket["ticket_id"]]
        now = datetime.now(UTC)
        past = {
            "start_date": iso(now - timedelta(hours=3)),
            "end_date": iso(now - timedelta(hours=1)),
        }
        moved = await api.put(f"/api/events/{event.event_id}", json=past, headers=organizer.headers)
        assert moved.status_code == 200, moved.text
        shown = await api.get("/api/resale/marketplace", params=market)
        assert (shown.json(), shown.headers["X-Total-Count"]) == ([], "0")


async def _listed_while_resale_held_back(
    api: httpx.AsyncClient, system: System, ticket_id: int, write: Callable[[], Awaitable[Account]]
) -> httpx.Response:
    """`write` answered, then the ticket listed at 30 by the account it returns, while resale's
    consumer is held back (its inbox locked against inserts, reads still allowed): the
    listing's answer, given once resale was let go."""
    async with holding(system, "LOCK TABLE resale.inbox IN SHARE MODE"):
        seller = await write()
        listing = asyncio.create_task(
            api.post(f"/api/tickets/{ticket_id}/resell", json={"price": 30}, headers=seller.headers)
        )
        await waiting_for_lock(system, "%resale%inbox%", listing)
        await asyncio.wait([listing], timeout=0.5)
    return await listing


async def test_a_ticket_checked_in_a_moment_before_is_not_listed(
    api: httpx.AsyncClient, system: System
) -> None:
    """§9.4 "Ticket is no longer valid" once the door said 200, though resale has not applied
    the check-in yet: resale's consumer is held back (its inbox locked against inserts, reads
    still allowed), and the listing waits for it instead of listing a used ticket."""
    admin, organizer, owner = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=40)
    [ticket] = await buy(api, owner, event.type_id)
    code = await ticket_code(system, ticket["ticket_id"])

    async def checked_in() -> Account:
        scan = await api.post(
            "/api/tickets/check-in", json={"code": code}, headers=organizer.headers
        )
        assert scan.status_code == 200, scan.text
        return owner

    refused = await _listed_while_resale_held_back(api, system, ticket["ticket_id"], checked_in)
    assert (refused.status_code, refused.json()) == (400, {"detail": "Ticket is no longer valid"})


async def test_a_seller_unbanned_a_moment_before_can_list(
    api: httpx.AsyncClient, system: System
) -> None:
    """§1.8: once the unban has answered, the seller's listing is not refused as banned,
    though resale has not applied the unban yet (its consumer held back): resale's "Account
    banned" rests on auth's events, so it catches up with auth before saying it."""
    admin, organizer, owner = await cast(api)
    event = await event_on_sale(api, admin, organizer, price=40)
    [ticket] = await buy(api, owner, event.type_id)
    moderation = bearer(admin)
    banned = await api.post(f"/api/auth/ban-user/{owner.user_id}", headers=moderation)
    assert banned.status_code == 200, banned.text

    async def ban_applied() -> bool:
        rows = await db_rows(
            system, "SELECT banned FROM resale.users WHERE user_id = :u", u=owner.user_id
        )
        return bool(rows and rows[0].banned)

    assert await eventually(ban_applied)

    async def unbanned() -> Account:
        lifted = await api.post(f"/api/auth/unban-user/{owner.user_id}", headers=moderation)
        assert lifted.status_code == 200, lifted.text
        return await sign_in(api, owner)  # tokens from before the ban stay invalid (§3.16)

    listed = await _listed_while_resale_held_back(api, system, ticket["ticket_id"], unbanned)
    assert listed.status_code == 200, listed.text
    assert listed.json()["resell_price"] == 30


async def test_a_producers_head_names_its_newest_event_and_those_just_before_it(
    api: httpx.AsyncClient, system: System
) -> None:
    """What a refusal catches up with: the newest event of the types asked and the others
    published a moment before it, since the consumer may apply an older one after the newest
    (it works on several batches at once)."""
    for _ in range(3):
        await register_customer(api)
    engine = create_engine(system.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            last = (
                (
                    await conn.execute(
                        text(
                            "SELECT event_id FROM auth.outbox WHERE type = 'auth.UserRegistered' "
                            "ORDER BY id DESC LIMIT 3"
                        )
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=system.url("auth")) as internal:
        head = (
            await internal.get(
                "/internal/events/head", params={"types": "auth.UserRegistered,auth.UserBanned"}
            )
        ).json()
    assert head["event_id"] == str(last[0])
    assert {str(e) for e in last[1:]} <= set(head["recent"])
    assert str(last[0]) not in head["recent"]
