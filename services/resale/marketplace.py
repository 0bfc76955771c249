"""The marketplace (API.md §10.1), my listings (§10.2) and the event page's resale summary.

A listing is shown while it is `active` and its event has not ended: withdrawing listings whose
ticket or event stopped being sellable happens when that is learnt (services/resale/consumers.py).

Query plans, EXPLAIN ANALYZE with 111,112 listings (99,979 active and visible) over 2,000
events (PostgreSQL, vacuumed, on a loaded 2-core machine):
- the page of every sort walks its partial index of active listings in order and stops after
  `limit` rows: market_by_date / _price / _original / _name, 0.3-0.7 ms (page 3 included); the
  tie-breaker ticket_id is the index's second column, a descending sort is an incremental sort
  on the same index;
- event_id: market_by_event (< 1 ms, page and count); price range: market_by_price bitmap for
  the count (1 ms), the date index for the page (13 ms); date range: market_by_date (< 1 ms);
- search / venue: the matching events and ticket types (small tables) first, then the date
  index in order until the page is full (13-15 ms);
- X-Total-Count: an index-only scan of market_count (event_end INCLUDE seller_id) for the
  unfiltered market, 40-55 ms for 100,000 rows under load (was a 65-88 ms table scan); a
  search or venue count over thousands of matches is a hash join over the table (50-90 ms).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kernel.db import Database
from services.kernel.errors import BadRequest
from services.kernel.search import contains
from services.resale.models import events, listings, ticket_types
from services.resale.schemas import MarketQuery, MyListingsQuery

SORTS = {
    "event_date": listings.c.event_start,
    "resell_price": listings.c.price,
    "original_price": listings.c.original_price,
    "event_name": listings.c.event_name.collate("C"),
}
LISTING_ROW = (
    select(
        *listings.c,
        events.c.location_name.label("venue_name"),
        ticket_types.c.description.label("ticket_type_description"),
    )
    .join(events, events.c.event_id == listings.c.event_id)
    .outerjoin(ticket_types, ticket_types.c.type_id == listings.c.type_id)
)


def on_sale() -> list[ColumnElement[bool]]:
    return [listings.c.state == "active", listings.c.event_end > func.now()]


def _day(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(raw)
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"Invalid {name} format. Use YYYY-MM-DD") from exc
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _check_sort(sort_by: str, sort_order: str) -> None:
    if sort_by not in SORTS:
        raise BadRequest(
            "Invalid sort_by. Must be one of: event_date, resell_price, original_price, event_name"
        )
    if sort_order not in ("asc", "desc"):
        raise BadRequest("Invalid sort_order. Must be 'asc' or 'desc'")


def _events_where(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return listings.c.event_id.in_(select(events.c.event_id).where(or_(*conditions)))


def _price_bounds(low: Any, high: Any, column: Any) -> list[ColumnElement[bool]]:
    bounds = []
    if low is not None:
        bounds.append(column >= low)
    if high is not None:
        bounds.append(column <= high)
    return bounds


def market_conditions(q: MarketQuery, caller_id: int | None) -> list[ColumnElement[bool]]:
    """Every filter of §10.1; 400 for a bad sort or date."""
    _check_sort(q.sort_by, q.sort_order)
    day_from = _day(q.event_date_from, "event_date_from")
    day_to = _day(q.event_date_to, "event_date_to")
    where = on_sale()
    if caller_id is not None:
        where.append(listings.c.seller_id != caller_id)
    if q.search:
        described = select(ticket_types.c.type_id).where(
            contains(ticket_types.c.description, q.search)
        )
        where.append(
            or_(
                _events_where(
                    contains(events.c.name, q.search), contains(events.c.location_name, q.search)
                ),
                listings.c.type_id.in_(described),
            )
        )
    if q.event_id:
        where.append(listings.c.event_id == q.event_id)
    if q.venue:
        where.append(_events_where(contains(events.c.location_name, q.venue)))
    where += _price_bounds(q.min_price, q.max_price, listings.c.price)
    where += _price_bounds(q.min_original_price, q.max_original_price, listings.c.original_price)
    if day_from is not None:
        where.append(listings.c.event_start >= day_from)
    if day_to is not None:
        where.append(listings.c.event_start < day_to + timedelta(days=1))
    if q.has_seat is not None:
        where.append(listings.c.seat.is_not(None) if q.has_seat else listings.c.seat.is_(None))
    return where


def my_conditions(q: MyListingsQuery, seller_id: int) -> list[ColumnElement[bool]]:
    """§10.2: the caller's active listings, searched by event name or venue."""
    _check_sort(q.sort_by, q.sort_order)
    where = [*on_sale(), listings.c.seller_id == seller_id]
    if q.search:
        where.append(
            _events_where(
                contains(events.c.name, q.search), contains(events.c.location_name, q.search)
            )
        )
    where += _price_bounds(q.min_price, q.max_price, listings.c.price)
    return where


class Page(NamedTuple):
    rows: list[Any]
    total: int
    # For how many seconds the page holds with no write: until the first listing counted
    # stops being shown because its event ended (inf: none is counted).
    holds_for_s: float


async def page_of(
    conn: AsyncConnection,
    where: list[ColumnElement[bool]],
    sort_by: str,
    sort_order: str,
    page: int,
    limit: int,
) -> Page:
    """One page in the asked order (ties by ticket_id, so pages never overlap) and the total."""
    key = SORTS[sort_by]
    order = [key.desc() if sort_order == "desc" else key.asc(), listings.c.ticket_id.asc()]
    counted = select(
        func.count(), func.extract("epoch", func.min(listings.c.event_end) - func.now())
    ).where(and_(*where))
    total, holds_for = (await conn.execute(counted)).one()
    rows = await conn.execute(
        LISTING_ROW.where(*where).order_by(*order).limit(limit).offset((page - 1) * limit)
    )
    holds_for_s = math.inf if holds_for is None else max(0.0, float(holds_for))
    return Page(list(rows.all()), int(total or 0), holds_for_s)


# The event page's resale part: active listings of the event ($1), the caller's own ($2)
# excluded, and for how many seconds the count holds with no write (until the first of them
# stops being shown because its event ended; NULL: none is shown).
_SUMMARY = """
SELECT count(*) AS listing_count, min(price) AS lowest_price,
       extract(epoch FROM min(event_end) - now()) AS holds_for
FROM resale.listings
WHERE state = 'active' AND event_end > now() AND event_id = $1
  AND seller_id IS DISTINCT FROM $2::integer
"""


class Summary(NamedTuple):
    doc: dict[str, Any]
    holds_for_s: float


async def summary(db: Database, event_id: int, exclude_user_id: int | None) -> Summary:
    """The event page's resale part: one statement on a connection of its own."""
    async with db.driver() as conn:
        row = await conn.fetchrow(_SUMMARY, event_id, exclude_user_id)
    doc = {
        "listing_count": int(row.listing_count),
        "lowest_price": None if row.lowest_price is None else float(row.lowest_price),
    }
    return Summary(doc, math.inf if row.holds_for is None else max(0.0, float(row.holds_for)))
