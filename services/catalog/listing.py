"""Event listing and search (API.md §6.1) and the ticket-type list (§7.1).

Query plans, checked with EXPLAIN ANALYZE on 100,000 events, 150,000 ticket types and 200
venues (PostgreSQL 15, vacuumed):
- the page (LIMIT 50) of every sort walks an index in order and stops after 50 rows:
  `events_by_start`, `events_by_name` (name COLLATE "C", event_id), or the primary key for
  creation_date; the visibility filter is applied on the way (0.2–1 ms, page 3 included);
- search: bitmap OR of the trigram GIN indexes on name and description (< 1 ms);
- organizer_id, start_date range: `events_by_organizer` / `events_by_start` (< 1 ms);
- price range: nested semi-join on `ticket_types_by_event_price` along the sort index (~7 ms),
  or `ticket_types_by_price` when the range is narrow;
- categories: GIN on the lower-cased `categories_key` (overlap operator);
- X-Total-Count is an exact count: an index-only scan of `events_by_status` for the
  visibility filter (10–20 ms for 67,000 visible events), up to ~50 ms when every event must
  be checked against its ticket types (has_available_tickets). Narrow filters count in < 1 ms.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, not_, select

from services.catalog.access import visible_to
from services.catalog.models import events, locations, ticket_types
from services.catalog.schemas import EventQuery, TicketTypeQuery
from services.kernel.db import Database
from services.kernel.errors import BadRequest
from services.kernel.search import contains
from services.kernel.tokens import Identity

STATUSES = ("pending", "created", "rejected", "cancelled")
SORTS = {
    "start_date": events.c.start_date,
    "name": events.c.name.collate("C"),
    "creation_date": events.c.event_id,
}
EVENT_ROW = select(*events.c, locations.c.name.label("location_name")).join(
    locations, locations.c.location_id == events.c.location_id
)


def _price_between(low: Any, high: Any) -> ColumnElement[bool]:
    conditions = [ticket_types.c.event_id == events.c.event_id]
    if low is not None:
        conditions.append(ticket_types.c.price >= low)
    if high is not None:
        conditions.append(ticket_types.c.price <= high)
    return exists().where(*conditions)


def event_conditions(q: EventQuery, identity: Identity | None) -> list[ColumnElement[bool]]:
    """Every filter of 6.1 within what the caller may see; 400 for a bad enumeration."""
    if q.status is not None and q.status not in STATUSES:
        raise BadRequest("Invalid status. Must be one of: pending, created, rejected, cancelled")
    if q.sort_by not in SORTS:
        raise BadRequest("Invalid sort_by. Must be one of: start_date, name, creation_date")
    if q.sort_order not in ("asc", "desc"):
        raise BadRequest("Invalid sort_order. Must be 'asc' or 'desc'")
    where = [visible_to(identity)]
    if q.search:
        where.append(contains(events.c.name, q.search) | contains(events.c.description, q.search))
    if q.location:
        named = select(locations.c.location_id).where(contains(locations.c.name, q.location))
        where.append(events.c.location_id.in_(named))
    if q.start_date_from is not None:
        where.append(events.c.start_date >= q.start_date_from)
    if q.start_date_to is not None:
        where.append(events.c.start_date <= q.start_date_to)
    if q.min_price is not None or q.max_price is not None:
        where.append(_price_between(q.min_price, q.max_price))
    if q.organizer_id:
        where.append(events.c.organizer_id == q.organizer_id)
    if q.minimum_age:
        where.append(events.c.minimum_age >= q.minimum_age)
    if q.status is not None:
        where.append(events.c.status == q.status)
    terms = [t.strip().lower() for t in (q.categories or "").split(",") if t.strip()]
    if terms:
        where.append(events.c.categories_key.overlap(terms))
    if q.has_available_tickets is not None:
        unsold = exists().where(
            ticket_types.c.event_id == events.c.event_id,
            ticket_types.c.sold < ticket_types.c.max_count,
        )
        where.append(unsold if q.has_available_tickets else not_(unsold))
    return where


def event_page(q: EventQuery, where: list[ColumnElement[bool]]) -> Select[Any]:
    key = SORTS[q.sort_by]
    # The event id breaks ties (ascending), so pages never overlap.
    order = [key.desc() if q.sort_order == "desc" else key.asc()]
    if q.sort_by != "creation_date":
        order.append(events.c.event_id.asc())
    return EVENT_ROW.where(*where).order_by(*order).limit(q.limit).offset((q.page - 1) * q.limit)


async def list_events(
    db: Database, q: EventQuery, identity: Identity | None
) -> tuple[list[Any], int]:
    where = event_conditions(q, identity)
    async with db.reader.connect() as conn:
        total = await conn.scalar(select(func.count()).select_from(events).where(and_(*where)))
        rows = (await conn.execute(event_page(q, where))).all()
    return rows, int(total or 0)


async def list_ticket_types(
    db: Database, q: TicketTypeQuery, identity: Identity | None
) -> list[Any]:
    where = [visible_to(identity)]
    if q.type_id is not None:
        where.append(ticket_types.c.type_id == q.type_id)
    if q.event_id is not None:
        where.append(ticket_types.c.event_id == q.event_id)
    if q.min_price is not None:
        where.append(ticket_types.c.price >= q.min_price)
    if q.max_price is not None:
        where.append(ticket_types.c.price <= q.max_price)
    stmt = (
        select(ticket_types)
        .join(events, events.c.event_id == ticket_types.c.event_id)
        .where(*where)
        .order_by(ticket_types.c.type_id)
    )
    async with db.reader.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def event_page_of(
    db: Database, event_id: int, identity: Identity | None
) -> tuple[Any, list[Any]] | None:
    """6.2: the visible event and its ticket types, or None."""
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(EVENT_ROW.where(events.c.event_id == event_id, visible_to(identity)))
        ).first()
        if row is None:
            return None
        types = await conn.execute(
            select(ticket_types)
            .where(ticket_types.c.event_id == event_id)
            .order_by(ticket_types.c.type_id)
        )
        return row, list(types.all())


async def all_locations(db: Database) -> list[Any]:
    async with db.reader.connect() as conn:
        stmt = select(locations).order_by(locations.c.name.collate("C"), locations.c.location_id)
        return list((await conn.execute(stmt)).all())
