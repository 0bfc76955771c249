"""Events published by ordering (API.md §11). Never ticket codes: they are secrets."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from contracts.envelope import Event, register


class HoldPlaced(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.HoldPlaced"
    hold_id: int
    user_id: int
    type_id: int
    quantity: int
    expires_at: datetime


class HoldReleased(HoldPlaced, frozen=True):
    TYPE: ClassVar[str] = "ordering.HoldReleased"


class HoldExpired(HoldPlaced, frozen=True):
    TYPE: ClassVar[str] = "ordering.HoldExpired"


class OrderLine(msgspec.Struct, frozen=True):
    ticket_type_id: int
    event_id: int
    quantity: int
    unit_price: str


class OrderPlaced(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.OrderPlaced"
    order_id: int
    user_id: int
    lines: list[OrderLine]
    total: str
    currency: str


class OrderCompleted(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.OrderCompleted"
    order_id: int
    user_id: int
    ticket_ids: list[int]


class OrderFailed(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.OrderFailed"
    order_id: int
    user_id: int
    reason: str


class TicketPurchased(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.TicketPurchased"
    ticket_id: int
    order_id: int
    type_id: int
    event_id: int
    owner_id: int
    price: str
    currency: str


class TicketTransferred(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.TicketTransferred"
    ticket_id: int
    listing_id: int
    from_user_id: int
    to_user_id: int
    price: str | None = None
    currency: str | None = None


class TicketRefunded(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.TicketRefunded"
    ticket_id: int
    owner_id: int
    event_id: int
    amount: str
    currency: str
    reason: str


class TicketCheckedIn(Event, frozen=True):
    TYPE: ClassVar[str] = "ordering.TicketCheckedIn"
    ticket_id: int
    event_id: int
    checked_in_at: datetime
    by: int


class TicketTransferRefused(Event, frozen=True):
    """A ListingSold could not be applied (ticket checked in or refunded meanwhile)."""

    TYPE: ClassVar[str] = "ordering.TicketTransferRefused"
    ticket_id: int
    listing_id: int
    reason: str


register(
    HoldPlaced,
    HoldReleased,
    HoldExpired,
    OrderPlaced,
    OrderCompleted,
    OrderFailed,
    TicketPurchased,
    TicketTransferred,
    TicketRefunded,
    TicketCheckedIn,
    TicketTransferRefused,
)


# ---- ordering's internal HTTP API (not events) -----------------------------------------------


class InventoryLimit(msgspec.Struct, frozen=True):
    """Catalog's `POST /internal/ticket-types/{type_id}/limit`, sent before it commits a lower
    capacity or a deletion (max_count 0): from now on ordering sells no more than `max_count`
    of the type, whatever sale races the change (API.md §7.3, §7.4). `revision` is the
    change's number (drawn from a sequence: later changes have higher ones, none is reused):
    ordering takes a capacity from a later event only if it is at least that new."""

    revision: int
    max_count: int


class LimitAnswer(msgspec.Struct, frozen=True):
    applied: bool  # False: more than max_count is sold already, or stale; nothing changed
    sold: int  # every ticket of the type ordering ever issued
    stale: bool = False  # a later revision is in effect: this limit came too late
