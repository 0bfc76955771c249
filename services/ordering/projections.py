"""Ordering's copies of other services' facts, kept from their events.

Every upsert carries the producer's sequence number, so an older event that arrives late (two
ordering instances compete on one queue, a retry, a replay's reprocess) never overwrites a
newer one; a cancellation, a deletion and a closed listing are final whatever arrives after
them. Catalog's events and locations: services/kernel/event_copies.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, update
from sqlalchemy.dialects.postgresql import insert

from contracts.auth import UserProfileUpdated, UserRegistered
from contracts.catalog import (
    EventApproved,
    EventCreated,
    EventRejected,
    LocationUpdated,
    TicketTypeCreated,
)
from contracts.envelope import Envelope
from contracts.resale import ListingCancelled, ListingCreated
from services.kernel import event_copies
from services.kernel.consumer import bulk, last_per_key
from services.kernel.db import UnitOfWork
from services.kernel.projections import change_copied, newest
from services.ordering.models import events, listings, locations, ticket_types, users


async def on_event_saved(event: EventCreated, envelope: Envelope, uow: UnitOfWork) -> None:
    """EventCreated and EventUpdated."""
    fields = {
        "organizer_id": event.organizer_id,
        "name": event.name,
        "start_date": event.start_date,
        "end_date": event.end_date,
        "location_id": event.location_id,
    }
    await event_copies.save_event(uow, events, locations, event, envelope.sequence, fields)


async def on_event_approved(event: EventApproved, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.set_status(uow, events, event.event_id, "created", envelope.sequence)


async def on_event_rejected(event: EventRejected, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.set_status(uow, events, event.event_id, "rejected", envelope.sequence)


async def on_location_updated(event: LocationUpdated, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.rename_location(uow, events, locations, event, envelope.sequence)


async def on_ticket_type_saved(
    event: TicketTypeCreated, envelope: Envelope, uow: UnitOfWork
) -> None:
    """TicketTypeCreated and TicketTypeUpdated: price, capacity, sale window. A lower
    max_count only stops new holds and sales; what is held or sold stays. The capacity comes
    only from an event at least as new as the limit catalog set here before it committed a
    lower one (holds.limit): an older event arriving late does not raise it again."""
    values = {
        "type_id": event.type_id,
        "event_id": event.event_id,
        "description": event.description,
        "price": Decimal(event.price),
        "currency": event.currency.upper(),
        "available_from": event.available_from,
        "max_count": event.max_count,
        "seq": envelope.sequence,
        "revision": event.revision,
    }
    stmt = insert(ticket_types).values(**values)
    changes: dict[str, Any] = {k: stmt.excluded[k] for k in values if k != "type_id"}
    t = ticket_types.c
    changes["max_count"] = case(
        (t.revision <= event.revision, stmt.excluded.max_count), else_=t.max_count
    )
    changes["revision"] = func.greatest(t.revision, event.revision)
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.type_id], set_=changes, where=t.seq < envelope.sequence
        )
    )


@bulk
async def on_user_registered(items: list[tuple[UserRegistered, Envelope]], uow: UnitOfWork) -> None:
    stmt = insert(users)
    names = {k: stmt.excluded[k] for k in ("first_name", "last_name")}
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[users.c.user_id],
            set_={"email": stmt.excluded.email, **newest(users, "seq", stmt.excluded.seq, names)},
        ),
        [
            {
                "user_id": e.user_id,
                "email": e.email,
                "first_name": e.first_name,
                "last_name": e.last_name,
                "seq": envelope.sequence,
            }
            for e, envelope in last_per_key(items, lambda e: e.user_id)
        ],
    )


async def on_profile_updated(
    event: UserProfileUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    names = {"first_name": event.first_name, "last_name": event.last_name}
    change = (
        update(users)
        .where(users.c.user_id == event.user_id)
        .values(newest(users, "seq", envelope.sequence, names))
    )
    await change_copied(uow, change, users.c.user_id == event.user_id, f"user {event.user_id}")


async def on_listing_saved(event: ListingCreated, envelope: Envelope, uow: UnitOfWork) -> None:
    """ListingCreated and ListingRepriced: the ticket's resell_price while it is active."""
    values = {
        "listing_id": event.listing_id,
        "ticket_id": event.ticket_id,
        "seller_id": event.seller_id,
        "price": Decimal(event.price),
        "currency": event.currency,
        "state": "active",
        "seq": envelope.sequence,
    }
    stmt = insert(listings).values(**values)
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[listings.c.listing_id],
            set_={k: stmt.excluded[k] for k in ("seller_id", "price", "currency", "seq")},
            where=(listings.c.state == "active") & (listings.c.seq < envelope.sequence),
        )
    )


async def close_listing(uow: UnitOfWork, listing_id: int, ticket_id: int, state: str) -> bool:
    """Mark a listing cancelled/sold/refused; False when it was already closed (a repeat)."""
    stmt = insert(listings).values(listing_id=listing_id, ticket_id=ticket_id, state=state)
    closed = await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[listings.c.listing_id],
            set_={"state": state},
            where=listings.c.state == "active",
        ).returning(listings.c.listing_id)
    )
    return closed.first() is not None


async def on_listing_cancelled(
    event: ListingCancelled, envelope: Envelope, uow: UnitOfWork
) -> None:
    await close_listing(uow, event.listing_id, event.ticket_id, "cancelled")
