"""Issued tickets through the gateway (API.md §9.1–9.3): the holder's list, the PDF with its QR
code, check-in by the event's organizer (once), and what resale and cancellation do to them."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import datetime

import httpx

from services.ordering.pdf import TicketPrint, render_ticket
from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    bearer,
    register_organizer,
    verified_organizer,
)
from tests.support.resale_actors import holder, resell
from tests.support.shop import (
    add,
    buy,
    db_rows,
    event_on_sale,
    eventually,
    ticket_code,
    ticket_type,
)
from tests.support.system import System

IMAGE_STREAM = re.compile(rb"/Subtype /Image.*?stream\r?\n(.*?)\r?\nendstream", re.S)


async def qr_image(api: httpx.AsyncClient, holder: Account, ticket_id: int) -> bytes:
    """The QR code image embedded in the holder's PDF of the ticket (its only image)."""
    response = await api.get(f"/api/tickets/{ticket_id}/download", headers=holder.headers)
    assert response.status_code == 200, response.text
    [image] = IMAGE_STREAM.findall(base64.b64decode(response.json()["pdf_data"]))
    return image  # type: ignore[no-any-return]


def qr_image_of(code: str) -> bytes:
    """The QR code image a PDF ticket embeds for `code` (the rest of the page aside)."""
    document = render_ticket(
        TicketPrint(
            ticket_id=1,
            code=code,
            event_name="-",
            start_date=datetime(2030, 1, 1),
            venue="-",
            ticket_type="-",
            seat=None,
            holder="-",
        )
    )
    [image] = IMAGE_STREAM.findall(document)
    return image  # type: ignore[no-any-return]


async def test_ticket_list_filters_and_only_shows_the_callers_own(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    buyer = await active_customer(api, admin)
    other = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer, price=30)
    vip = await ticket_type(api, organizer, event.event_id, price=80)
    standard = await buy(api, buyer, event.type_id, 2)
    [premium] = await buy(api, buyer, vip["type_id"], 1)
    assert premium == {
        "ticket_id": premium["ticket_id"],
        "type_id": vip["type_id"],
        "seat": None,
        "owner_id": buyer.user_id,
        "resell_price": None,
        "original_price": 80.0,
        "event_name": event.name,
        "event_start_date": premium["event_start_date"],
        "event_location": premium["event_location"],
        "ticket_type_description": vip["description"],
        "event_id": event.event_id,
        "status": "valid",
    }
    everything = await api.get("/api/tickets/", headers=buyer.headers)
    ids = [t["ticket_id"] for t in everything.json()]
    assert ids == sorted([*(t["ticket_id"] for t in standard), premium["ticket_id"]])
    assert everything.headers["X-Total-Count"] == "3"
    by_type = await api.get(
        "/api/tickets", params={"type_id": event.type_id}, headers=buyer.headers
    )
    assert len(by_type.json()) == 2
    one = await api.get("/api/tickets", params={"ticket_id": ids[0]}, headers=buyer.headers)
    assert [t["ticket_id"] for t in one.json()] == [ids[0]]
    for status, expected in (("refunded", 0), ("valid", 3), ("used", 0)):
        answer = await api.get("/api/tickets", params={"status": status}, headers=buyer.headers)
        assert len(answer.json()) == expected
    not_listed = await api.get(
        "/api/tickets", params={"is_on_resale": "TRUE"}, headers=buyer.headers
    )
    assert not_listed.json() == []
    unlisted = await api.get(
        "/api/tickets", params={"is_on_resale": "false"}, headers=buyer.headers
    )
    assert [t["ticket_id"] for t in unlisted.json()] == ids
    bad = await api.get("/api/tickets", params={"status": "lost"}, headers=buyer.headers)
    assert (bad.status_code, bad.json()) == (
        400,
        {"detail": "Invalid status. Must be one of: valid, used, refunded"},
    )
    assert (
        await api.get("/api/tickets", params={"type_id": "x"}, headers=buyer.headers)
    ).status_code == 422
    # owner_id is honoured for administrators only.
    snooping = await api.get(
        "/api/tickets", params={"owner_id": buyer.user_id}, headers=other.headers
    )
    assert snooping.json() == []
    for ignored in ("abc", 2**40):  # ignored otherwise: whatever it says
        own = await api.get("/api/tickets", params={"owner_id": ignored}, headers=buyer.headers)
        assert [t["ticket_id"] for t in own.json()] == ids, own.text
    as_admin = await api.get(
        "/api/tickets", params={"owner_id": buyer.user_id}, headers=bearer(admin)
    )
    assert [t["ticket_id"] for t in as_admin.json()] == ids
    bad = await api.get("/api/tickets", params={"owner_id": "abc"}, headers=bearer(admin))
    assert bad.status_code == 422
    assert (await api.get("/api/tickets")).status_code == 401


async def test_pdf_ticket_for_its_owner_only(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    buyer = await active_customer(api, admin)
    other = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer)
    [ticket] = await buy(api, buyer, event.type_id)
    tid = ticket["ticket_id"]
    response = await api.get(f"/api/tickets/{tid}/download", headers=buyer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == f"ticket-{tid}.pdf"
    pdf = base64.b64decode(body["pdf_data"])
    assert pdf.startswith(b"%PDF-") and b"/Image" in pdf  # the QR code is an embedded image
    for who, path in ((other, tid), (buyer, 0), (buyer, 2**40)):
        hidden = await api.get(f"/api/tickets/{path}/download", headers=who.headers)
        assert (hidden.status_code, hidden.json()) == (404, {"detail": "Ticket not found"})
    assert (await api.get("/api/tickets/abc/download", headers=buyer.headers)).status_code == 422
    assert (await api.get(f"/api/tickets/{tid}/download")).status_code == 401


async def test_check_in_by_the_events_organizer_exactly_once(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    rival = await verified_organizer(api, admin)
    unverified = await register_organizer(api)
    buyer = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer)
    [ticket] = await buy(api, buyer, event.type_id)
    code = await ticket_code(system, ticket["ticket_id"])

    async def scan(token: str, body: object) -> httpx.Response:
        return await api.post("/api/tickets/check-in", json=body, headers=bearer(token))

    assert (await api.post("/api/tickets/check-in", json={"code": code})).status_code == 401
    for token, detail in (
        (buyer.token, "Not an organizer"),
        (unverified.token, "Organizer not verified"),
        (rival.token, "Not authorized to check in tickets for this event"),
    ):
        refused = await scan(token, {"code": code})
        assert (refused.status_code, refused.json()) == (403, {"detail": detail})
    for blank in ({}, {"code": ""}, {"code": "  "}):  # required strings are not blank (§1.4)
        assert (await scan(organizer.token, blank)).status_code == 422, blank
    unknown = await scan(organizer.token, {"code": "not-a-real-code"})
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Invalid ticket code"})

    scans = await asyncio.gather(*(scan(organizer.token, {"code": code}) for _ in range(8)))
    ok = [s for s in scans if s.status_code == 200]
    assert len(ok) == 1, [s.text for s in scans]
    assert ok[0].json()["message"] == "Ticket checked in"
    assert ok[0].json()["ticket_id"] == ticket["ticket_id"]
    assert ok[0].json()["event_name"] == event.name
    assert {(s.status_code, s.json()["detail"]) for s in scans if s.status_code != 200} == {
        (409, "Ticket already checked in")
    }
    used = await api.get("/api/tickets", params={"status": "used"}, headers=buyer.headers)
    assert [t["ticket_id"] for t in used.json()] == [ticket["ticket_id"]]


async def test_the_default_ticket_list_keeps_a_checked_in_ticket_as_used(
    api: httpx.AsyncClient, system: System
) -> None:
    """With no `status` asked the list holds valid and used tickets (§9.1): a ticket scanned at
    the door stays in its holder's list, marked used, beside the one not scanned yet."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    buyer = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer)
    scanned, kept = await buy(api, buyer, event.type_id, 2)
    code = await ticket_code(system, scanned["ticket_id"])
    scan = await api.post("/api/tickets/check-in", json={"code": code}, headers=organizer.headers)
    assert scan.status_code == 200, scan.text
    listed = await api.get("/api/tickets", headers=buyer.headers)
    assert [(t["ticket_id"], t["status"]) for t in listed.json()] == [
        (scanned["ticket_id"], "used"),
        (kept["ticket_id"], "valid"),
    ]
    assert listed.headers["X-Total-Count"] == "2"


async def test_cancelled_event_refunds_and_voids_tickets(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    buyer = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer, price=40)
    tickets = await buy(api, buyer, event.type_id, 2)
    code = await ticket_code(system, tickets[0]["ticket_id"])
    assert (await api.delete(f"/api/events/{event.event_id}", headers=organizer.headers)).json()

    async def refunded() -> list:
        answer = await api.get("/api/tickets", params={"status": "refunded"}, headers=buyer.headers)
        return answer.json()  # type: ignore[no-any-return]

    assert len(await eventually(refunded)) == 2
    assert (await api.get("/api/tickets", headers=buyer.headers)).json() == []
    [order] = (await api.get("/api/orders", headers=buyer.headers)).json()
    assert order["status"] == "refunded"
    pdf = await api.get(f"/api/tickets/{tickets[0]['ticket_id']}/download", headers=buyer.headers)
    assert (pdf.status_code, pdf.json()) == (400, {"detail": "Ticket is no longer valid"})
    scan = await api.post("/api/tickets/check-in", json={"code": code}, headers=organizer.headers)
    assert (scan.status_code, scan.json()) == (400, {"detail": "Ticket is no longer valid"})

    async def refund_notice() -> list:
        return [m for m in system.mails(buyer.email) if "Refund" in str(m["Subject"])]

    assert len(await eventually(refund_notice)) == 1


async def test_resold_ticket_moves_to_its_buyer_with_a_new_code(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    original = await holder(api, admin, price=50)
    seller, organizer, tid = original.account, original.event.organizer, original.ticket_id
    buyer = await active_customer(api, admin)
    old_code = await ticket_code(system, tid)
    listed = await resell(api, seller, tid, 60)
    assert listed.status_code == 200, listed.text

    async def shows_listing() -> bool:
        mine = await api.get(
            "/api/tickets", params={"is_on_resale": "true"}, headers=seller.headers
        )
        return [t["resell_price"] for t in mine.json()] == [60.0]

    assert await eventually(shows_listing)
    busy = await api.post(
        "/api/tickets/check-in", json={"code": old_code}, headers=organizer.headers
    )
    assert (busy.status_code, busy.json()) == (409, {"detail": "Ticket is listed for resale"})

    bought = await api.post("/api/resale/purchase", json={"ticket_id": tid}, headers=buyer.headers)
    assert bought.status_code == 200, bought.text
    [moved] = (await api.get("/api/tickets", headers=buyer.headers)).json()
    assert (moved["ticket_id"], moved["owner_id"], moved["resell_price"]) == (
        tid,
        buyer.user_id,
        None,
    )
    assert moved["original_price"] == 50.0
    assert (await api.get("/api/tickets", headers=seller.headers)).json() == []
    new_code = await ticket_code(system, tid)
    assert new_code != old_code
    stale = await api.post(
        "/api/tickets/check-in", json={"code": old_code}, headers=organizer.headers
    )
    assert (stale.status_code, stale.json()) == (404, {"detail": "Invalid ticket code"})
    fresh = await api.post(
        "/api/tickets/check-in", json={"code": new_code}, headers=organizer.headers
    )
    assert fresh.status_code == 200, fresh.text
    gone = await api.get(f"/api/tickets/{tid}/download", headers=seller.headers)
    assert gone.status_code == 404

    async def transfer_notice() -> list:
        return [m for m in system.mails(buyer.email) if "is now yours" in str(m["Subject"])]

    assert len(await eventually(transfer_notice)) == 1


async def test_a_reprice_keeps_the_price_paid_on_issued_tickets_and_their_refund(
    api: httpx.AsyncClient, system: System
) -> None:
    """A new price applies to later checkouts only (§7.3): a ticket bought at 30 still shows
    original_price 30.0 once its type costs 45, one bought after the change costs 45, and
    cancelling the event refunds each buyer what they paid (§6.5): 30.00 and 45.00."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    early = await active_customer(api, admin)
    late = await active_customer(api, admin)
    event = await event_on_sale(api, admin, organizer, price=30)
    [bought] = await buy(api, early, event.type_id)
    assert bought["original_price"] == 30.0
    repriced = await api.put(
        f"/api/ticket-types/{event.type_id}", json={"price": 45}, headers=organizer.headers
    )
    assert (repriced.status_code, repriced.json()["price"]) == (200, 45.0)
    # The cart shows catalog's prices once ordering has caught up with them (§1.8): the new
    # price has reached ordering, and with it whatever a reprice would do to issued tickets.
    assert (await add(api, late, event.type_id)).status_code == 200
    [line] = (await api.get("/api/cart/items", headers=late.headers)).json()
    assert line["ticket_type"]["price"] == 45.0
    assert (await api.post("/api/cart/checkout", headers=late.headers)).status_code == 200
    [dearer] = (await api.get("/api/tickets", headers=late.headers)).json()
    assert dearer["original_price"] == 45.0
    assert (await api.get("/api/tickets", headers=early.headers)).json() == [bought]

    assert (await api.delete(f"/api/events/{event.event_id}", headers=organizer.headers)).json()

    async def refunded() -> list:
        return [
            t
            for buyer in (early, late)
            for t in (
                await api.get("/api/tickets", params={"status": "refunded"}, headers=buyer.headers)
            ).json()
        ]

    assert len(await eventually(refunded)) == 2
    for buyer, paid in ((early, "30.00"), (late, "45.00")):
        ledger = await db_rows(
            system,
            "SELECT p.amount, p.refunded FROM ordering.payments p JOIN ordering.orders o"
            " ON p.authorize_key = 'order-' || o.order_id WHERE o.user_id = :u",
            u=buyer.user_id,
        )
        assert [(str(p.amount), str(p.refunded)) for p in ledger] == [(paid, paid)]


async def test_the_pdf_qr_code_follows_the_ticket_to_its_new_code(
    api: httpx.AsyncClient, system: System
) -> None:
    """The PDF's QR code is the ticket's current code (§9.2): before a resale it is the
    seller's code; after it the buyer's PDF carries the QR code of the new code, which differs
    from the one the seller printed."""
    admin = await admin_token(api)
    original = await holder(api, admin, price=50)
    seller, tid = original.account, original.ticket_id
    buyer = await active_customer(api, admin)
    printed = await qr_image(api, seller, tid)
    assert printed == qr_image_of(await ticket_code(system, tid))
    listed = await resell(api, seller, tid, 60)
    assert listed.status_code == 200, listed.text
    bought = await api.post("/api/resale/purchase", json={"ticket_id": tid}, headers=buyer.headers)
    assert bought.status_code == 200, bought.text
    reprinted = await qr_image(api, buyer, tid)
    assert reprinted == qr_image_of(await ticket_code(system, tid))
    assert reprinted != printed
