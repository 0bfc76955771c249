"""Request shapes (API.md §9.4, §10) and the documents answered from table rows."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import msgspec

from contracts.http import ticket_details
from contracts.timeutil import naive_utc
from services.kernel.validation import INT32_MAX, Check, FieldError, Int32, Money, PaymentToken

Doc = dict[str, Any]
Page = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]


def _price(value: Decimal) -> Decimal:
    """A number, rounded half-up to cents; a price of zero or below is the domain's 400."""
    if not value.is_finite():
        raise FieldError("Input should be a finite number", "finite_number")
    # Bounds before quantize, which raises InvalidOperation (a 500) past 28 digits (1e300).
    if value >= Decimal("99999999.995"):
        raise FieldError("Input should be less than or equal to 99999999.99", "less_than_equal")
    if value < 0:
        return value  # the domain's 400, whatever its size
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class ListingPrice(msgspec.Struct, kw_only=True):
    """9.4 body; a body `ticket_id` is ignored (only declared fields are read)."""

    price: Annotated[Decimal, Check(_price)] | None = None


class PurchaseRequest(msgspec.Struct, kw_only=True):
    ticket_id: Int32
    expected_price: Money | None = None
    payment_token: PaymentToken | None = None


class MarketQuery(msgspec.Struct, kw_only=True):
    page: Page = 1
    limit: Limit = 50
    search: str | None = None
    event_id: Int32 | None = None
    venue: str | None = None
    min_price: Money | None = None
    max_price: Money | None = None
    min_original_price: Money | None = None
    max_original_price: Money | None = None
    event_date_from: str | None = None
    event_date_to: str | None = None
    has_seat: bool | None = None
    sort_by: str = "event_date"
    sort_order: str = "asc"


class MyListingsQuery(msgspec.Struct, kw_only=True):
    page: Page = 1
    limit: Limit = 50
    search: str | None = None
    min_price: Money | None = None
    max_price: Money | None = None
    sort_by: str = "event_date"
    sort_order: str = "asc"


class SummaryQuery(msgspec.Struct, kw_only=True):
    event_id: Int32
    exclude_user_id: Int32 | None = None


def ticket_doc(row: Any) -> Doc:
    """TicketDetails (API.md §9)."""
    return ticket_details(row)


def listing_doc(row: Any) -> Doc:
    """ResaleTicketListing (API.md §10)."""
    return {
        "ticket_id": row.ticket_id,
        "original_price": float(row.original_price),
        "resell_price": float(row.price),
        "event_name": row.event_name,
        "event_date": naive_utc(row.event_start),
        "venue_name": row.venue_name,
        "ticket_type_description": row.ticket_type_description,
        "seat": row.seat,
        "event_id": row.event_id,
    }
