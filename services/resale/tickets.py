"""Tickets as resale sees them (its projection of ordering and catalog): TicketDetails, and
whether a ticket's listing is active in the sense of API.md §10."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.timeutil import utcnow
from services.resale.models import events, listings, ticket_types, tickets

OPEN = ("active", "purchasing")


def _open_listing_price() -> Any:
    """The price of the holder's open listing of the ticket, if any (none once its event has
    ended: such a listing is not active, §10)."""
    return (
        select(listings.c.price)
        .where(
            listings.c.ticket_id == tickets.c.ticket_id,
            listings.c.seller_id == tickets.c.owner_id,
            listings.c.state.in_(OPEN),
            events.c.end_date > func.now(),
        )
        .limit(1)
        .scalar_subquery()
    )


TICKET_ROW = (
    select(
        tickets.c.ticket_id,
        tickets.c.type_id,
        tickets.c.seat,
        tickets.c.owner_id,
        tickets.c.original_price,
        tickets.c.currency,
        tickets.c.event_id,
        tickets.c.status,
        _open_listing_price().label("resell_price"),
        events.c.name.label("event_name"),
        events.c.start_date.label("event_start_date"),
        events.c.end_date.label("event_end_date"),
        events.c.status.label("event_status"),
        events.c.resale_price_cap_percent,
        events.c.location_name.label("event_location"),
        ticket_types.c.description.label("ticket_type_description"),
    )
    .join(events, events.c.event_id == tickets.c.event_id)
    .outerjoin(ticket_types, ticket_types.c.type_id == tickets.c.type_id)
)


async def ticket_row(conn: AsyncConnection, ticket_id: int, lock: bool = False) -> Any:
    """The ticket with its event, or None when resale does not know it (yet)."""
    stmt = TICKET_ROW.where(tickets.c.ticket_id == ticket_id)
    if lock:  # serialises listing changes of one ticket
        stmt = stmt.with_for_update(of=tickets)
    return (await conn.execute(stmt)).first()


def sellable(row: Any) -> bool:
    """§10: the event is neither cancelled nor rejected nor ended, and the ticket is valid."""
    return (
        row.status == "valid"
        and row.event_status not in ("cancelled", "rejected")
        and row.event_end_date > utcnow()
    )


async def latest_listing(conn: AsyncConnection, ticket_id: int) -> Any:
    return (
        await conn.execute(
            select(listings)
            .where(listings.c.ticket_id == ticket_id)
            .order_by(listings.c.listing_id.desc())
            .limit(1)
        )
    ).first()


def open_listing_of(ticket_id: int) -> Any:
    return and_(listings.c.ticket_id == ticket_id, listings.c.state.in_(OPEN))
