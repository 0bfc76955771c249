"""Request shapes (API.md §5–§7) and the response documents built from table rows."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from contracts.timeutil import naive_utc
from services.kernel.validation import (
    INT32_MAX,
    Check,
    FieldError,
    Int32,
    Money,
    NonBlank255,
    UtcDateTime,
    not_blank,
)


def _text(max_length: int) -> Any:
    return Annotated[str, msgspec.Meta(min_length=1, max_length=max_length), Check(not_blank)]


def _currency(value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise FieldError("String should match pattern '^[A-Za-z]{3}$'", "string_pattern_mismatch")
    return value.upper()


def _categories(values: list[str]) -> list[str]:
    """Trimmed (the filter trims its terms, so a category with spaces around it could never
    be found), case-insensitive duplicates dropped, the first spelling kept."""
    seen: set[str] = set()
    kept = []
    for value in values:
        value = not_blank(value).strip()
        if value.lower() not in seen:
            seen.add(value.lower())
            kept.append(value)
    return kept


Text100 = _text(100)
Category = _text(50)
Message = _text(2000)
Categories = Annotated[list[Category], msgspec.Meta(max_length=10), Check(_categories)]
Description = Annotated[str, msgspec.Meta(max_length=5000)]
Zipcode = Annotated[str, msgspec.Meta(max_length=20)]
Age = Annotated[int, msgspec.Meta(ge=0, le=150)]
ResaleCap = Annotated[int, msgspec.Meta(ge=100, le=1000)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Currency = Annotated[str, Check(_currency)]
Page = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
NonNegativeInt32 = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]


# ---- locations -------------------------------------------------------------------------


class LocationCreate(msgspec.Struct, kw_only=True):
    name: NonBlank255
    address: NonBlank255
    city: Text100
    country: Text100
    zipcode: Zipcode | None = None


class LocationUpdate(msgspec.Struct, kw_only=True):
    name: NonBlank255 | None = None
    address: NonBlank255 | None = None
    city: Text100 | None = None
    country: Text100 | None = None
    zipcode: Zipcode | None = None


# ---- events ----------------------------------------------------------------------------


class EventCreate(msgspec.Struct, kw_only=True):
    name: NonBlank255
    start_date: UtcDateTime
    end_date: UtcDateTime
    location_id: Int32
    total_tickets: Capacity
    standard_ticket_price: Money
    ticket_sales_start: UtcDateTime
    description: Description | None = None
    minimum_age: Age | None = None
    category: Categories = []
    resale_price_cap_percent: ResaleCap | None = None


class EventChanges(msgspec.Struct, kw_only=True):
    """PUT /api/events/{id}: null or absent = unchanged (the query form has no `category`)."""

    name: NonBlank255 | None = None
    description: Description | None = None
    start_date: UtcDateTime | None = None
    end_date: UtcDateTime | None = None
    minimum_age: Age | None = None
    location_id: Int32 | None = None
    resale_price_cap_percent: ResaleCap | None = None


class EventUpdate(EventChanges, kw_only=True):
    category: Categories | None = None


class EventQuery(msgspec.Struct, kw_only=True):
    page: Page = 1
    limit: Limit = 50
    search: str | None = None
    location: str | None = None
    start_date_from: UtcDateTime | None = None
    start_date_to: UtcDateTime | None = None
    min_price: Money | None = None
    max_price: Money | None = None
    organizer_id: Int32 | None = None
    minimum_age: NonNegativeInt32 | None = None
    status: str | None = None
    categories: str | None = None
    has_available_tickets: bool | None = None
    sort_by: str = "start_date"
    sort_order: str = "asc"


class Notification(msgspec.Struct, kw_only=True):
    message: Message
    urgent: bool = False


# ---- ticket types ----------------------------------------------------------------------


class TicketTypeEventRef(msgspec.Struct, kw_only=True):
    """7.2 reads `event_id` first: the event is looked up before the other fields."""

    event_id: int


class TicketTypeCreate(msgspec.Struct, kw_only=True):
    max_count: Capacity
    price: Money
    available_from: UtcDateTime
    currency: Currency = "USD"
    description: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class NewTicketType(TicketTypeCreate, kw_only=True):
    """7.2's whole body as documented (the handler reads `event_id` first, then the rest)."""

    event_id: Int32


class TicketTypeUpdate(msgspec.Struct, kw_only=True):
    price: Money | None = None
    description: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    max_count: Capacity | None = None


class TicketTypeQuery(msgspec.Struct, kw_only=True):
    type_id: Int32 | None = None
    event_id: Int32 | None = None
    min_price: Money | None = None
    max_price: Money | None = None


# ---- responses -------------------------------------------------------------------------


def location_doc(row: Any) -> dict[str, Any]:
    return {
        "location_id": row.location_id,
        "name": row.name,
        "address": row.address,
        "zipcode": row.zipcode,
        "city": row.city,
        "country": row.country,
    }


def event_doc(row: Any) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "organizer_id": row.organizer_id,
        "name": row.name,
        "description": row.description,
        "start_date": naive_utc(row.start_date),
        "end_date": naive_utc(row.end_date),
        "minimum_age": row.minimum_age,
        "location_id": row.location_id,
        "location_name": row.location_name,
        "status": row.status,
        "categories": list(row.categories),
        "total_tickets": int(row.total_tickets),
        "resale_price_cap_percent": row.resale_price_cap_percent,
    }


def ticket_type_doc(row: Any) -> dict[str, Any]:
    return {
        "type_id": row.type_id,
        "event_id": row.event_id,
        "description": row.description,
        "max_count": row.max_count,
        "price": float(row.price),
        "currency": row.currency,
        "available_from": naive_utc(row.available_from),
    }
