"""Ordering's and resale's copies of catalog's events and of their locations' names.

Each column group keeps the catalog sequence of the event that wrote it, so an older event
applied after a newer one (a retry, a replay's reprocess) changes nothing that is newer:
- the event's fields (`seq`): EventCreated and EventUpdated;
- its status (`status_seq`): those two, EventApproved and EventRejected; a cancellation is final;
- its location's name: the newest name catalog gave the location (`locations`, from both the
  event's own messages and LocationUpdated), whichever location the event is at now.

A status change for an event not copied yet is not applied to nothing: it fails, so the consumer
retries it (then dead-letters it) until its creation is there.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import BigInteger, Column, MetaData, Row, Table, Text, case, func, update
from sqlalchemy.dialects.postgresql import insert

from contracts.catalog import EventCreated, LocationUpdated
from services.kernel.db import UnitOfWork
from services.kernel.projections import change_copied, newest, older_than

CANCELLED = "cancelled"


def locations_table(metadata: MetaData) -> Table:
    """A copy's table of catalog's locations: each one's newest name, and its sequence."""
    return Table(
        "locations",
        metadata,
        Column("location_id", BigInteger, primary_key=True),
        Column("name", Text, nullable=False),
        Column("seq", BigInteger, nullable=False),
    )


async def _name_location(
    uow: UnitOfWork, locations: Table, location_id: int, name: str, sequence: int
) -> None:
    stmt = insert(locations).values(location_id=location_id, name=name, seq=sequence)
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[locations.c.location_id],
            set_={"name": name, "seq": sequence},
            where=older_than(locations.c.seq, sequence),
        )
    )


async def save_event(
    uow: UnitOfWork,
    events: Table,
    locations: Table,
    event: EventCreated,
    sequence: int,
    fields: Mapping[str, object],
) -> Row:
    """EventCreated and EventUpdated: `fields` (the copy's columns, location_id among them) and
    the status, each where newer. The event's row as it stands now."""
    await _name_location(uow, locations, event.location_id, event.location_name, sequence)
    stmt = insert(events).values(
        event_id=event.event_id,
        **fields,
        location_name=event.location_name,
        status=event.status,
        seq=sequence,
        status_seq=sequence,
    )
    e = events.c
    status = case(
        (e.status == CANCELLED, CANCELLED),
        (older_than(e.status_seq, sequence), stmt.excluded.status),
        else_=e.status,
    )
    changes = newest(events, "seq", sequence, {k: stmt.excluded[k] for k in fields})
    changes.update(status=status, status_seq=func.greatest(e.status_seq, sequence))
    await uow.execute(stmt.on_conflict_do_update(index_elements=[e.event_id], set_=changes))
    saved = await uow.execute(
        update(events)
        .where(e.event_id == event.event_id, locations.c.location_id == e.location_id)
        .values(location_name=locations.c.name)
        .returning(events)
    )
    return saved.one()


async def rename_location(
    uow: UnitOfWork, events: Table, locations: Table, event: LocationUpdated, sequence: int
) -> None:
    """LocationUpdated: the name, where newer, on every event at the location."""
    await _name_location(uow, locations, event.location_id, event.name, sequence)
    await uow.execute(
        update(events)
        .where(
            events.c.location_id == event.location_id,
            locations.c.location_id == event.location_id,
            events.c.location_name != locations.c.name,
        )
        .values(location_name=locations.c.name)
    )


async def set_status(
    uow: UnitOfWork, events: Table, event_id: int, status: str, sequence: int
) -> bool:
    """EventApproved, EventRejected (where newer) and EventCancelled (always, and final).
    Whether it changed the copy; NotProjectedYet if the event is not there."""
    e = events.c
    which = [e.event_id == event_id, e.status != CANCELLED]
    if status != CANCELLED:
        which.append(older_than(e.status_seq, sequence))
    change = (
        update(events)
        .where(*which)
        .values(status=status, status_seq=func.greatest(e.status_seq, sequence))
    )
    return await change_copied(uow, change, e.event_id == event_id, f"event {event_id}")
