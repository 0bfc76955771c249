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

from services.kernel.conditions import Conditions
from services.kernel.db import Database
from services.kernel.errors import BadRequest
from services.kernel.search import like_pattern
from services.resale.schemas import MarketQuery, MyListingsQuery

# Pages are read straight through the driver (services/kernel/conditions.py says why).
SORTS = {
    "event_date": "l.event_start",
    "resell_price": "l.price",
    "original_price": "l.original_price",
    "event_name": 'l.event_name COLLATE "C"',
}
_PAGE = """
SELECT l.ticket_id, l.original_price, l.price, l.event_name, l.event_start, l.seat, l.event_id,
       e.location_name AS venue_name, t.description AS ticket_type_description
FROM resale.listings l
JOIN resale.events e ON e.event_id = l.event_id
LEFT JOIN resale.ticket_types t ON t.type_id = l.type_id
WHERE {where}
ORDER BY {key} {direction}, l.ticket_id
LIMIT ${limit} OFFSET ${offset}
"""
# The total, and for how many seconds it holds with no write: until the first listing
# counted stops being shown because its event ended (NULL: none is counted).
_COUNT = """
SELECT count(*) AS total, extract(epoch FROM min(l.event_end) - now()) AS holds_for
FROM resale.listings l WHERE {where}
"""
_ON_SALE = "l.state = 'active' AND l.event_end > now()"
_EVENTS_WHERE = "l.event_id IN (SELECT event_id FROM resale.events WHERE {})"


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


def market_conditions(q: MarketQuery, caller_id: int | None) -> Conditions:
    """Every filter of §10.1; 400 for a bad sort or date."""
    _check_sort(q.sort_by, q.sort_order)
    day_from = _day(q.event_date_from, "event_date_from")
    day_to = _day(q.event_date_to, "event_date_to")
    where = Conditions(_ON_SALE)
    if caller_id is not None:
        where.add("l.seller_id <> {}", caller_id)
    if q.search:
        term = where.arg(like_pattern(q.search))
        where.add(
            f"({_EVENTS_WHERE.format(f'name ILIKE {term} OR location_name ILIKE {term}')}"
            " OR l.type_id IN (SELECT type_id FROM resale.ticket_types"
            f" WHERE description ILIKE {term}))"
        )
    if q.event_id:
        where.add("l.event_id = {}", q.event_id)
    if q.venue:
        where.add(_EVENTS_WHERE.format("location_name ILIKE {}"), like_pattern(q.venue))
    where.range("l.price", q.min_price, q.max_price)
    where.range("l.original_price", q.min_original_price, q.max_original_price)
    if day_from is not None:
        where.add("l.event_start >= {}", day_from)
    if day_to is not None and day_to.date() < date.max:  # every start is on or before the last
        where.add("l.event_start < {}", day_to + timedelta(days=1))
    if q.has_seat is not None:
        where.add("l.seat IS NOT NULL" if q.has_seat else "l.seat IS NULL")
    return where


def my_conditions(q: MyListingsQuery, seller_id: int) -> Conditions:
    """§10.2: the caller's active listings, searched by event name or venue."""
    _check_sort(q.sort_by, q.sort_order)
    where = Conditions(_ON_SALE)
    where.add("l.seller_id = {}", seller_id)
    if q.search:
        term = where.arg(like_pattern(q.search))
        where.add(_EVENTS_WHERE.format(f"name ILIKE {term} OR location_name ILIKE {term}"))
    where.range("l.price", q.min_price, q.max_price)
    return where


class Page(NamedTuple):
    rows: list[Any]
    total: int
    # For how many seconds the page holds with no write (inf: nothing counted ends).
    holds_for_s: float


async def page_of(
    db: Database, where: Conditions, sort_by: str, sort_order: str, page: int, limit: int
) -> Page:
    """One page in the asked order (ties by ticket_id, so pages never overlap) and the total."""
    args = [*where.args, limit, (page - 1) * limit]
    paged = _PAGE.format(
        where=where.sql,
        key=SORTS[sort_by],
        direction="DESC" if sort_order == "desc" else "ASC",
        limit=len(args) - 1,
        offset=len(args),
    )
    async with db.driver() as conn:
        counted = await conn.fetchrow(_COUNT.format(where=where.sql), *where.args)
        rows = await conn.fetch(paged, *args)
    assert counted is not None
    return Page(rows, int(counted.total), _seconds_left(counted.holds_for))


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
    return Summary(doc, _seconds_left(row.holds_for))


def _seconds_left(holds_for: Any) -> float:
    """A statement's `holds_for` (seconds until the first listing counted ends; NULL when
    none is counted) as how long its answer holds."""
    return math.inf if holds_for is None else max(0.0, float(holds_for))
