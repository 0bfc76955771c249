"""Events resale reacts to. Projections: tickets (ordering), events and ticket types
(catalog), users (auth). Effects: withdraw listings whose ticket or event stops being sellable
or whose seller is banned; settle sales; refund resale buyers of a cancelled event.
Every handler is idempotent (the kernel's inbox also drops redeliveries)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Update, update
from sqlalchemy.dialects.postgresql import insert

from contracts.auth import UserBanned, UserProfileUpdated, UserRegistered, UserUnbanned
from contracts.catalog import (
    EventApproved,
    EventCancelled,
    EventCreated,
    EventRejected,
    LocationUpdated,
    TicketTypeCreated,
)
from contracts.envelope import Envelope
from contracts.ordering import (
    TicketCheckedIn,
    TicketPurchased,
    TicketRefunded,
    TicketTransferred,
    TicketTransferRefused,
)
from services.kernel import event_copies
from services.kernel.consumer import Handler, bulk, last_per_key
from services.kernel.db import UnitOfWork
from services.kernel.projections import Projection, change_copied, newest, older_than
from services.resale import settlement
from services.resale.config import payment_provider
from services.resale.listings import cancel_listings
from services.resale.models import (
    events,
    listings,
    locations,
    purchases,
    ticket_types,
    tickets,
    users,
)
from services.resale.tickets import OPEN

# ---- catalog -------------------------------------------------------------------------------


async def on_event_saved(event: EventCreated, envelope: Envelope, uow: UnitOfWork) -> None:
    fields = {
        "organizer_id": event.organizer_id,
        "name": event.name,
        "start_date": event.start_date,
        "end_date": event.end_date,
        "location_id": event.location_id,
        "resale_price_cap_percent": event.resale_price_cap_percent,
    }
    saved = await event_copies.save_event(uow, events, locations, event, envelope.sequence, fields)
    # Open listings carry the event's name and dates as the copy now has them.
    await uow.execute(
        update(listings)
        .where(listings.c.event_id == event.event_id, listings.c.state.in_(OPEN))
        .values(event_name=saved.name, event_start=saved.start_date, event_end=saved.end_date)
    )


async def on_event_approved(event: EventApproved, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.set_status(uow, events, event.event_id, "created", envelope.sequence)


async def on_event_rejected(event: EventRejected, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.set_status(uow, events, event.event_id, "rejected", envelope.sequence)
    await cancel_listings(uow, listings.c.event_id == event.event_id, "event_rejected")


async def on_event_cancelled(event: EventCancelled, envelope: Envelope, uow: UnitOfWork) -> None:
    # Committed before any refund goes to the processor: a buyer cannot claim a listing of
    # the event between a refund and a crash of this handler, so its retry refunds the same
    # purchases under the same keys. Otherwise a holder refunded by the first attempt could
    # sell the ticket meanwhile: the retry would skip them (a later sale), and they would keep
    # both the refund and the payout.
    async with uow.committed_first() as early:
        await event_copies.set_status(early, events, event.event_id, "cancelled", envelope.sequence)
        await cancel_listings(early, listings.c.event_id == event.event_id, "event_cancelled")
    await settlement.refund_holders(
        uow, purchases.c.event_id == event.event_id, payment_provider(uow.db)
    )


async def on_location_updated(event: LocationUpdated, envelope: Envelope, uow: UnitOfWork) -> None:
    await event_copies.rename_location(uow, events, locations, event, envelope.sequence)


@bulk
async def on_ticket_type_saved(
    items: list[tuple[TicketTypeCreated, Envelope]], uow: UnitOfWork
) -> None:
    stmt = insert(ticket_types)
    values = {k: stmt.excluded[k] for k in ("event_id", "description")}
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[ticket_types.c.type_id],
            set_=newest(ticket_types, "seq", stmt.excluded.seq, values),
        ),
        [
            {
                "type_id": e.type_id,
                "event_id": e.event_id,
                "description": e.description,
                "seq": envelope.sequence,
            }
            for e, envelope in last_per_key(items, lambda e: e.type_id)
        ],
    )


# ---- ordering ------------------------------------------------------------------------------


_TICKETS_PURCHASED = """
INSERT INTO resale.tickets (ticket_id, event_id, type_id, owner_id, original_price, currency,
                            holder_seq, status)
SELECT u.*, 'valid'
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::numeric[], $6::text[],
            $7::bigint[]) AS u
ON CONFLICT (ticket_id) DO NOTHING
"""


@bulk
async def on_ticket_purchased(
    items: list[tuple[TicketPurchased, Envelope]], uow: UnitOfWork
) -> None:
    events = [e for e, _ in items]
    await uow.fetchval(
        _TICKETS_PURCHASED,
        [e.ticket_id for e in events],
        [e.event_id for e in events],
        [e.type_id for e in events],
        [e.owner_id for e in events],
        [Decimal(e.price) for e in events],
        [e.currency for e in events],
        [envelope.sequence for _, envelope in items],
    )


async def _changed_ticket(uow: UnitOfWork, ticket_id: int, change: Update) -> None:
    """`change` of a ticket's row, retried while the ticket's purchase is not here yet."""
    await change_copied(uow, change, tickets.c.ticket_id == ticket_id, f"ticket {ticket_id}")


async def on_ticket_transferred(
    event: TicketTransferred, envelope: Envelope, uow: UnitOfWork
) -> None:
    await _changed_ticket(  # unless a later event already named the holder
        uow,
        event.ticket_id,
        update(tickets)
        .where(
            tickets.c.ticket_id == event.ticket_id,
            older_than(tickets.c.holder_seq, envelope.sequence),
        )
        .values(owner_id=event.to_user_id, holder_seq=envelope.sequence),
    )
    await settlement.transfer_recorded(event.listing_id, uow)
    await settlement.refund_if_void(uow, event.ticket_id, payment_provider(uow.db))


async def on_transfer_refused(
    event: TicketTransferRefused, envelope: Envelope, uow: UnitOfWork
) -> None:
    payments = payment_provider(uow.db)
    await settlement.transfer_refused(event.listing_id, event.reason, uow, payments)
    await settlement.refund_if_void(uow, event.ticket_id, payments)


async def on_ticket_refunded(event: TicketRefunded, envelope: Envelope, uow: UnitOfWork) -> None:
    await _changed_ticket(
        uow,
        event.ticket_id,
        update(tickets).where(tickets.c.ticket_id == event.ticket_id).values(status="refunded"),
    )
    await cancel_listings(uow, listings.c.ticket_id == event.ticket_id, "ticket_refunded")
    await settlement.refund_holders(
        uow, purchases.c.ticket_id == event.ticket_id, payment_provider(uow.db)
    )


async def on_ticket_checked_in(event: TicketCheckedIn, envelope: Envelope, uow: UnitOfWork) -> None:
    await _changed_ticket(  # a refund is final: a check-in applied after it changes nothing
        uow,
        event.ticket_id,
        update(tickets)
        .where(tickets.c.ticket_id == event.ticket_id, tickets.c.status == "valid")
        .values(status="used"),
    )
    await cancel_listings(uow, listings.c.ticket_id == event.ticket_id, "ticket_used")


# ---- auth ----------------------------------------------------------------------------------


@bulk
async def on_user_registered(items: list[tuple[UserRegistered, Envelope]], uow: UnitOfWork) -> None:
    stmt = insert(users)
    name = {"first_name": stmt.excluded.first_name}
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[users.c.user_id],
            set_={"email": stmt.excluded.email, **newest(users, "seq", stmt.excluded.seq, name)},
        ),
        [
            {
                "user_id": e.user_id,
                "email": e.email,
                "first_name": e.first_name,
                "seq": envelope.sequence,
            }
            for e, envelope in last_per_key(items, lambda e: e.user_id)
        ],
    )


async def on_profile_updated(
    event: UserProfileUpdated, envelope: Envelope, uow: UnitOfWork
) -> None:
    change = (
        update(users)
        .where(users.c.user_id == event.user_id)
        .values(newest(users, "seq", envelope.sequence, {"first_name": event.first_name}))
    )
    await change_copied(uow, change, users.c.user_id == event.user_id, f"user {event.user_id}")


async def on_ban_changed(
    event: UserBanned | UserUnbanned, envelope: Envelope, uow: UnitOfWork
) -> None:
    """The user's ban as auth last said it; a ban withdraws the seller's listings. An older
    ban or unban applied later (a retry, a replay's reprocess) changes nothing: a seller
    unbanned since keeps what they listed after. A user not copied here yet (their
    registration parked for a retry) gets a row with the ban alone, which the registration
    then completes."""
    banned = isinstance(event, UserBanned)
    stmt = insert(users).values(
        user_id=event.user_id, email="", first_name="", banned=banned, state_seq=envelope.sequence
    )
    written = await uow.conn.scalar(
        stmt.on_conflict_do_update(
            index_elements=[users.c.user_id],
            set_={"banned": banned, "state_seq": envelope.sequence},
            where=older_than(users.c.state_seq, envelope.sequence),
        ).returning(users.c.user_id)
    )
    if written is None:
        return  # a newer ban or unban is here already
    if banned:
        await cancel_listings(uow, listings.c.seller_id == event.user_id, "seller_banned")


HANDLERS: dict[str, Handler] = {
    "catalog.EventCreated": on_event_saved,
    "catalog.EventUpdated": on_event_saved,
    "catalog.EventApproved": on_event_approved,
    "catalog.EventRejected": on_event_rejected,
    "catalog.EventCancelled": on_event_cancelled,
    "catalog.LocationUpdated": on_location_updated,
    "catalog.TicketTypeCreated": on_ticket_type_saved,
    "catalog.TicketTypeUpdated": on_ticket_type_saved,
    "ordering.TicketPurchased": on_ticket_purchased,
    "ordering.TicketTransferred": on_ticket_transferred,
    "ordering.TicketTransferRefused": on_transfer_refused,
    "ordering.TicketRefunded": on_ticket_refunded,
    "ordering.TicketCheckedIn": on_ticket_checked_in,
    "auth.UserRegistered": on_user_registered,
    "auth.UserProfileUpdated": on_profile_updated,
    "auth.UserBanned": on_ban_changed,
    "auth.UserUnbanned": on_ban_changed,
}

# Tables that only mirror other services' events, and the events whose handlers write only
# them (replaying these has no other effect): `resellio projections rebuild resale`.
PROJECTION = Projection(
    tables={"ticket_types": ("seq",), "users": ("seq",)},
    events=[
        "catalog.TicketTypeCreated",
        "catalog.TicketTypeUpdated",
        "auth.UserRegistered",
        "auth.UserProfileUpdated",
    ],
)
