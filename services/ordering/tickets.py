"""Issued tickets: the holder's list, the PDF ticket, and check-in at the door (API.md §9)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select, update

from contracts.http import ticket_details
from contracts.ordering import TicketCheckedIn
from contracts.timeutil import naive_utc
from services.kernel.conditions import Conditions
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import BadRequest, Conflict, Forbidden, NotFound
from services.ordering.models import events, listings, ticket_types, tickets, users
from services.ordering.pdf import TicketPrint, render_ticket

STATUSES = ("valid", "used", "refunded")
NO_LONGER_VALID = "Ticket is no longer valid"


# The holder's tickets and what the list shows of each (API.md §9), read straight through the
# driver: asked on every visit to a customer's tickets, after the catch-up with resale.
_TICKETS = """
SELECT * FROM (
    SELECT t.ticket_id, t.type_id, t.seat, t.owner_id, t.original_price, t.event_id, t.status,
           (SELECT l.price FROM ordering.listings l
            WHERE l.ticket_id = t.ticket_id AND l.seller_id = t.owner_id AND l.state = 'active'
              AND e.end_date > now()  -- an ended event's listings are not active (§10)
            ORDER BY l.listing_id DESC LIMIT 1) AS resell_price,
           e.name AS event_name, e.start_date AS event_start_date,
           e.location_name AS event_location, tt.description AS ticket_type_description
    FROM ordering.tickets t
    JOIN ordering.events e ON e.event_id = t.event_id
    JOIN ordering.ticket_types tt ON tt.type_id = t.type_id
) AS d
WHERE {where}
ORDER BY d.ticket_id
"""


class TicketFilter(msgspec.Struct, frozen=True):
    owner_id: int
    ticket_id: int | None = None
    type_id: int | None = None
    is_on_resale: bool | None = None
    status: str | None = None


async def list_tickets(f: TicketFilter, db: Database) -> list[dict[str, Any]]:
    if f.status is not None and f.status not in STATUSES:
        raise BadRequest("Invalid status. Must be one of: valid, used, refunded")
    where = Conditions()
    where.add("d.owner_id = {}", f.owner_id)
    if f.status:
        where.add("d.status = {}", f.status)
    else:
        where.add("d.status IN ('valid', 'used')")
    if f.ticket_id is not None:
        where.add("d.ticket_id = {}", f.ticket_id)
    if f.type_id is not None:
        where.add("d.type_id = {}", f.type_id)
    if f.is_on_resale is not None:
        where.add(f"d.resell_price IS {'NOT ' if f.is_on_resale else ''}NULL")
    async with db.driver() as conn:
        rows = await conn.fetch(_TICKETS.format(where=where.sql), *where.args)
    return [ticket_details(row) for row in rows]


async def ticket_pdf(
    ticket_id: int, user_id: int, fallback_name: str, uow: UnitOfWork
) -> dict[str, str]:
    row = (
        await uow.execute(
            select(
                tickets,
                events.c.name.label("event_name"),
                events.c.start_date,
                events.c.location_name,
                ticket_types.c.description,
                users.c.first_name,
                users.c.last_name,
            )
            .join(events, events.c.event_id == tickets.c.event_id)
            .join(ticket_types, ticket_types.c.type_id == tickets.c.type_id)
            .outerjoin(users, users.c.user_id == tickets.c.owner_id)
            .where(tickets.c.ticket_id == ticket_id, tickets.c.owner_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound("Ticket not found")
    if row.status == "refunded":
        raise BadRequest(NO_LONGER_VALID)
    holder = f"{row.first_name} {row.last_name}" if row.first_name else fallback_name
    document = render_ticket(
        TicketPrint(
            ticket_id=row.ticket_id,
            code=row.code,
            event_name=row.event_name,
            start_date=row.start_date,
            venue=row.location_name,
            ticket_type=row.description or "Standard Ticket",
            seat=row.seat,
            holder=holder,
        )
    )
    return {
        "pdf_data": base64.b64encode(document).decode("ascii"),
        "filename": f"ticket-{row.ticket_id}.pdf",
    }


async def check_in(
    code: str, organizer_id: int, by_user: int, uow: UnitOfWork, now: datetime
) -> dict[str, Any]:
    """Errors in API.md §9.3's order. The ticket row is locked, so of concurrent scans (and a
    resale transfer) exactly one sees it valid."""
    row = (
        await uow.execute(
            select(
                tickets.c.ticket_id,
                tickets.c.event_id,
                tickets.c.owner_id,
                tickets.c.status,
                tickets.c.seat,
                events.c.name.label("event_name"),
                events.c.organizer_id,
                events.c.end_date,
                ticket_types.c.description,
            )
            .join(events, events.c.event_id == tickets.c.event_id)
            .join(ticket_types, ticket_types.c.type_id == tickets.c.type_id)
            .where(tickets.c.code == code)
            .with_for_update(of=tickets)
        )
    ).first()
    if row is None:
        raise NotFound("Invalid ticket code")
    if row.organizer_id != organizer_id:
        raise Forbidden("Not authorized to check in tickets for this event")
    if row.status == "refunded":
        raise BadRequest(NO_LONGER_VALID)
    listed = await uow.execute(
        select(listings.c.listing_id).where(
            listings.c.ticket_id == row.ticket_id,
            listings.c.seller_id == row.owner_id,
            listings.c.state == "active",
        )
    )
    # An ended event's listings are not active (§10): nor shown, nor withdrawable, nor in the way.
    if listed.first() is not None and row.end_date > now:
        raise Conflict("Ticket is listed for resale")
    if row.status == "used":
        raise Conflict("Ticket already checked in")
    await uow.execute(
        update(tickets)
        .where(tickets.c.ticket_id == row.ticket_id)
        .values(status="used", checked_in_at=now)
    )
    uow.emit(
        TicketCheckedIn(
            ticket_id=row.ticket_id, event_id=row.event_id, checked_in_at=now, by=by_user
        ),
        aggregate_id=row.ticket_id,
    )
    await uow.commit()
    return {
        "ticket_id": row.ticket_id,
        "event_id": row.event_id,
        "event_name": row.event_name,
        "ticket_type_description": row.description,
        "seat": row.seat,
        "checked_in_at": naive_utc(now),
        "message": "Ticket checked in",
    }
