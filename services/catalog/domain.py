"""The catalog's rules: venues, events and their approval, ticket types (API.md §5–§7).

Plain async functions taking a command and a unit of work; each write commits its state and
its events together (transactional outbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import delete, exists, func, insert, select, update

from contracts import catalog as ev
from contracts.timeutil import utcnow
from services.catalog.access import PUBLIC_STATUSES
from services.catalog.listing import EVENT_ROW
from services.catalog.models import events, locations, ticket_types, tickets
from services.catalog.schemas import (
    EventCreate,
    EventUpdate,
    LocationCreate,
    LocationUpdate,
    Notification,
    TicketTypeCreate,
    TicketTypeUpdate,
)
from services.kernel.db import UnitOfWork
from services.kernel.errors import BadRequest, Forbidden, NotFound, RequestValidationError
from services.kernel.tokens import Identity
from services.kernel.validation import parse_mapping

END_BEFORE_START = RequestValidationError.single(
    ["body", "end_date"], "Value error, end_date must be after start_date", "value_error"
)

# ---- venues ----------------------------------------------------------------------------


def _location_missing(location_id: int | str) -> NotFound:
    return NotFound(f"Location '{location_id}' not found")


async def create_location(cmd: LocationCreate, uow: UnitOfWork) -> Any:
    row = (
        await uow.execute(insert(locations).values(**_fields(cmd)).returning(*locations.c))
    ).one()
    uow.emit(ev.LocationCreated(**row._mapping), aggregate_id=f"location-{row.location_id}")
    await uow.commit()
    return row


async def update_location(
    location_id: int, cmd: LocationUpdate, uow: UnitOfWork, *, shown: str
) -> Any:
    """`shown`: the id as the client sent it, for the 404 (`path_id`'s 0 names nothing)."""
    where = locations.c.location_id == location_id
    before = (await uow.execute(select(locations).where(where).with_for_update())).first()
    if before is None:
        raise _location_missing(shown)
    changes = {k: v for k, v in _fields(cmd).items() if v is not None}
    row = before
    if changes:
        row = (
            await uow.execute(
                update(locations).where(where).values(**changes).returning(*locations.c)
            )
        ).one()
    uow.emit(ev.LocationUpdated(**row._mapping), aggregate_id=f"location-{location_id}")
    if row.name != before.name:
        # Consumers keep location_name with each event: a rename updates every event there,
        # each locked first and told as it is then (read unlocked, an approval committed
        # meanwhile would be undone by this later, staler EventUpdated).
        ids = await uow.execute(
            select(events.c.event_id)
            .where(events.c.location_id == location_id)
            .order_by(events.c.event_id)
            .with_for_update()
        )
        for (event_id,) in ids.all():
            await _emit_event(uow, event_id, ev.EventUpdated)
    await uow.commit()
    return row


async def delete_location(location_id: int, uow: UnitOfWork, *, shown: str) -> None:
    """`shown`: the id as the client sent it, for the 404 (`path_id`'s 0 names nothing)."""
    where = locations.c.location_id == location_id
    if (
        await uow.execute(select(locations.c.location_id).where(where).with_for_update())
    ).first() is None:
        raise _location_missing(shown)
    if await uow.conn.scalar(select(exists().where(events.c.location_id == location_id))):
        raise BadRequest("Cannot delete a location that is used by events")
    await uow.execute(delete(locations).where(where))
    uow.emit(ev.LocationDeleted(location_id=location_id), aggregate_id=f"location-{location_id}")
    await uow.commit()


async def _require_location(uow: UnitOfWork, location_id: int) -> None:
    found = await uow.conn.scalar(
        select(locations.c.location_id)
        .where(locations.c.location_id == location_id)
        .with_for_update(read=True)  # blocks a delete, not other events at this venue
    )
    if found is None:
        raise _location_missing(location_id)


# ---- events ----------------------------------------------------------------------------


async def event_row(uow: UnitOfWork, event_id: int) -> Any:
    return (await uow.execute(EVENT_ROW.where(events.c.event_id == event_id))).first()


async def _event_for_change(
    uow: UnitOfWork, event_id: int, message: str = "Event not found"
) -> Any:
    """The event, locked for this transaction, or 404."""
    row = (
        await uow.execute(select(events).where(events.c.event_id == event_id).with_for_update())
    ).first()
    if row is None:
        raise NotFound(message)
    return row


def _owner_only(event: Any, identity: Identity, forbidden: str, unknown: str) -> None:
    """Another organizer's event: 403 where they may see it, else the endpoint's 404 (API.md
    §1.2, §6: an event invisible to the caller is answered like an unknown one, so a 403
    would tell them it exists)."""
    if identity.role == "administrator" or event.organizer_id == identity.role_id:
        return
    if event.status in PUBLIC_STATUSES:
        raise Forbidden(forbidden)
    raise NotFound(unknown)


async def _emit_event(uow: UnitOfWork, event_id: int, kind: type[ev.EventCreated]) -> Any:
    row = await event_row(uow, event_id)
    uow.emit(
        kind(
            event_id=row.event_id,
            organizer_id=row.organizer_id,
            name=row.name,
            description=row.description,
            start_date=row.start_date,
            end_date=row.end_date,
            location_id=row.location_id,
            location_name=row.location_name,
            status=row.status,
            minimum_age=row.minimum_age,
            categories=list(row.categories),
            resale_price_cap_percent=row.resale_price_cap_percent,
            total_tickets=int(row.total_tickets),
        ),
        aggregate_id=f"event-{event_id}",
    )
    return row


async def create_event(cmd: EventCreate, organizer_id: int, uow: UnitOfWork) -> Any:
    """One transaction: the event (pending), its standard ticket type and both events."""
    await _require_location(uow, cmd.location_id)
    event_id = await uow.conn.scalar(
        insert(events)
        .values(
            organizer_id=organizer_id,
            name=cmd.name,
            description=cmd.description,
            start_date=cmd.start_date,
            end_date=cmd.end_date,
            minimum_age=cmd.minimum_age,
            location_id=cmd.location_id,
            status="pending",
            categories=cmd.category,
            categories_key=[c.lower() for c in cmd.category],
            total_tickets=cmd.total_tickets,
            resale_price_cap_percent=cmd.resale_price_cap_percent,
        )
        .returning(events.c.event_id)
    )
    standard = TicketTypeCreate(
        max_count=cmd.total_tickets,
        price=cmd.standard_ticket_price,
        available_from=cmd.ticket_sales_start,
        description="Standard Ticket",
    )
    row = await _emit_event(uow, event_id, ev.EventCreated)
    await _insert_ticket_type(uow, row, standard)
    await uow.commit()
    return row


async def update_event(event_id: int, cmd: EventUpdate, identity: Identity, uow: UnitOfWork) -> Any:
    current = await _event_for_change(uow, event_id)
    _owner_only(current, identity, "Not authorized to update this event", "Event not found")
    if current.status == "cancelled":
        raise BadRequest("Cannot update a cancelled event")
    changes = {k: v for k, v in _fields(cmd).items() if v is not None}
    if changes.get("start_date", current.start_date) >= changes.get("end_date", current.end_date):
        raise END_BEFORE_START
    if changes.get("location_id", current.location_id) != current.location_id:
        # Only another venue: the event's own is locked by its rename after its events.
        await _require_location(uow, changes["location_id"])
    if "category" in changes:
        categories = changes.pop("category")
        changes.update(categories=categories, categories_key=[c.lower() for c in categories])
    if changes:
        await uow.execute(update(events).where(events.c.event_id == event_id).values(**changes))
    row = await _emit_event(uow, event_id, ev.EventUpdated)
    await _emit_ticket_types(uow, row)  # they carry the event's dates and status
    await uow.commit()
    return row


async def cancel_event(event_id: int, identity: Identity, uow: UnitOfWork) -> None:
    current = await _event_for_change(uow, event_id)
    _owner_only(current, identity, "Not authorized to cancel this event", "Event not found")
    if current.status == "cancelled":
        return
    at = utcnow()
    if current.end_date <= at:
        raise BadRequest("Cannot cancel an event that has already ended")
    await uow.execute(
        update(events).where(events.c.event_id == event_id).values(status="cancelled")
    )
    by = identity.user_id
    uow.emit(ev.EventCancelled(event_id=event_id, by=by, at=at), aggregate_id=f"event-{event_id}")
    await uow.commit()


async def decide_event(event_id: int, approve: bool, admin: Identity, uow: UnitOfWork) -> None:
    """6.6 / 6.7: a pending event becomes created (sales open) or rejected."""
    current = await _event_for_change(uow, event_id)
    verb, status = ("authorize", "created") if approve else ("reject", "rejected")
    if current.status != "pending":
        raise BadRequest(
            f"Event must be in pending status to {verb}. Current status: {current.status}"
        )
    await uow.execute(update(events).where(events.c.event_id == event_id).values(status=status))
    decision = ev.EventApproved if approve else ev.EventRejected
    uow.emit(decision(event_id=event_id, by=admin.user_id), aggregate_id=f"event-{event_id}")
    await uow.commit()


async def notify_participants(
    event_id: int, note: Notification, identity: Identity, uow: UnitOfWork
) -> dict[str, Any]:
    current = await _event_for_change(uow, event_id)
    _owner_only(
        current, identity, "Not authorized to notify participants of this event", "Event not found"
    )
    holders = await uow.execute(
        select(tickets.c.owner_id)
        .where(tickets.c.event_id == event_id, tickets.c.valid)
        .distinct()
        .order_by(tickets.c.owner_id)
    )
    recipients = [owner_id for (owner_id,) in holders.all()]
    uow.emit(
        ev.ParticipantsNotified(
            notification_id=str(uuid.uuid4()),
            event_id=event_id,
            message=note.message,
            urgent=note.urgent,
            recipients_affected=len(recipients),
            recipient_user_ids=recipients,
            event_name=current.name,
        ),
        aggregate_id=f"event-{event_id}",
    )
    await uow.commit()
    return {
        "success": True,
        "event_id": event_id,
        "message": note.message,
        "recipients_affected": len(recipients),
    }


# ---- ticket types ----------------------------------------------------------------------


REVISIONS = "catalog.ticket_type_revisions"


class Inventory(Protocol):
    """Ordering's inventory, limited before catalog commits a lower capacity or a deletion, so
    that no sale goes past it, not even one racing the change (API.md §7.3, §7.4)."""

    async def limit(self, type_id: int, revision: int, max_count: int) -> int | None:
        """From now on no more than `max_count` of the type is sold (None); or, when more is
        sold already, how many (nothing changed)."""


def _ticket_type_event(
    kind: type[ev.TicketTypeCreated], tt: Any, event: Any
) -> ev.TicketTypeCreated:
    return kind(
        type_id=tt.type_id,
        event_id=tt.event_id,
        description=tt.description,
        max_count=tt.max_count,
        price=str(tt.price),
        currency=tt.currency,
        available_from=tt.available_from,
        event_status=event.status,
        event_start_date=event.start_date,
        event_end_date=event.end_date,
        revision=tt.revision,
    )


async def _insert_ticket_type(uow: UnitOfWork, event: Any, cmd: TicketTypeCreate) -> Any:
    row = (
        await uow.execute(
            insert(ticket_types)
            .values(event_id=event.event_id, **_fields(cmd))
            .returning(*ticket_types.c)
        )
    ).one()
    uow.emit(
        _ticket_type_event(ev.TicketTypeCreated, row, event), aggregate_id=f"event-{event.event_id}"
    )
    return row


async def _next_revision(uow: UnitOfWork) -> int:
    return int(await uow.conn.scalar(select(func.nextval(REVISIONS))))


async def _emit_ticket_types(uow: UnitOfWork, event: Any) -> None:
    """Each type of the event told again (they carry its dates and status)."""
    await _tell_again(uow, event, ticket_types.c.event_id == event.event_id)


async def _tell_again(uow: UnitOfWork, event: Any, which: Any) -> None:
    """The event's types `which` told again, each at a new revision: a capacity ordering kept
    from a change that rolled back after its limit comes back."""
    await uow.execute(  # in type order, as catalog's consumer locks them
        select(ticket_types.c.type_id)
        .where(which)
        .order_by(ticket_types.c.type_id)
        .with_for_update()
    )
    rows = await uow.execute(
        update(ticket_types)
        .where(which)
        .values(revision=func.nextval(REVISIONS))
        .returning(*ticket_types.c)
    )
    for row in sorted(rows.all(), key=lambda r: r.type_id):
        uow.emit(
            _ticket_type_event(ev.TicketTypeUpdated, row, event),
            aggregate_id=f"event-{event.event_id}",
        )


_NOT_MANAGER = "Not authorized to manage ticket types for this event"


def _check_manager(event: Any, identity: Identity, unknown: str = "Ticket type not found") -> None:
    _owner_only(event, identity, _NOT_MANAGER, unknown)
    if event.status in ("rejected", "cancelled"):
        raise BadRequest(f"Cannot modify ticket types of an event with status '{event.status}'")


async def create_ticket_type(
    event_id: int, body: Mapping[str, Any], identity: Identity, uow: UnitOfWork
) -> Any:
    """7.2: the event is checked before the body's other fields are validated."""
    unknown = f"Event with id {event_id} not found"
    event = await _event_for_change(uow, event_id, unknown)
    _check_manager(event, identity, unknown)
    cmd = parse_mapping(body, TicketTypeCreate)
    row = await _insert_ticket_type(uow, event, cmd)
    await _sync_capacity(uow, event_id)
    await uow.commit()
    return row


async def _ticket_type_for_change(uow: UnitOfWork, type_id: int) -> tuple[Any, Any]:
    found = await uow.conn.scalar(
        select(ticket_types.c.event_id).where(ticket_types.c.type_id == type_id)
    )
    if found is None:
        raise NotFound("Ticket type not found")
    event = await _event_for_change(uow, found)  # locks the event first, then the type
    row = (
        await uow.execute(
            select(ticket_types).where(ticket_types.c.type_id == type_id).with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("Ticket type not found")
    return event, row


def _below_sold(sold: int) -> BadRequest:
    return BadRequest(f"max_count cannot be lower than the number of tickets sold ({sold})")


async def update_ticket_type(
    type_id: int, cmd: TicketTypeUpdate, identity: Identity, uow: UnitOfWork, inventory: Inventory
) -> Any:
    event, current = await _ticket_type_for_change(uow, type_id)
    _check_manager(event, identity)
    changes = {k: v for k, v in _fields(cmd).items() if v is not None}
    if "max_count" in changes and changes["max_count"] < current.sold:
        raise _below_sold(current.sold)
    row = current
    if changes:
        changes["revision"] = await _next_revision(uow)
        lower = changes.get("max_count", current.max_count)
        if lower < current.max_count:
            sold = await inventory.limit(type_id, changes["revision"], lower)
            if sold is not None:
                raise _below_sold(sold)
        row = (
            await uow.execute(
                update(ticket_types)
                .where(ticket_types.c.type_id == type_id)
                .values(**changes)
                .returning(*ticket_types.c)
            )
        ).one()
        await _sync_capacity(uow, event.event_id)
    uow.emit(
        _ticket_type_event(ev.TicketTypeUpdated, row, event), aggregate_id=f"event-{event.event_id}"
    )
    await uow.commit()
    return row


async def delete_ticket_type(
    type_id: int, identity: Identity, uow: UnitOfWork, inventory: Inventory
) -> None:
    event, current = await _ticket_type_for_change(uow, type_id)
    _owner_only(event, identity, _NOT_MANAGER, "Ticket type not found")
    if (
        current.issued > 0
        or await inventory.limit(type_id, await _next_revision(uow), 0) is not None
    ):
        raise BadRequest("Cannot delete a ticket type with sold tickets")
    await uow.execute(delete(ticket_types).where(ticket_types.c.type_id == type_id))
    await _sync_capacity(uow, event.event_id)
    uow.emit(
        ev.TicketTypeDeleted(type_id=type_id, event_id=event.event_id),
        aggregate_id=f"event-{event.event_id}",
    )
    await uow.commit()


async def announce_ticket_type(type_id: int, uow: UnitOfWork) -> None:
    """The type as committed, told again at a new revision: after a limit ordering may have
    taken for a change catalog then gave up on, this restores ordering's capacity (the event
    reaches ordering however long it is away; a limit arriving later is older, so ignored)."""
    try:
        event, _ = await _ticket_type_for_change(uow, type_id)
    except NotFound:  # deleted meanwhile: nothing to restore
        return
    await _tell_again(uow, event, ticket_types.c.type_id == type_id)
    await uow.commit()


async def _sync_capacity(uow: UnitOfWork, event_id: int) -> None:
    total = (
        select(func.coalesce(func.sum(ticket_types.c.max_count), 0))
        .where(ticket_types.c.event_id == event_id)
        .scalar_subquery()
    )
    await uow.execute(
        update(events).where(events.c.event_id == event_id).values(total_tickets=total)
    )


def _fields(cmd: Any) -> dict[str, Any]:
    return {name: getattr(cmd, name) for name in cmd.__struct_fields__}
