"""Events published by resale (API.md §11)."""

from __future__ import annotations

from typing import ClassVar

from contracts.envelope import Event, register


class ListingCreated(Event, frozen=True):
    TYPE: ClassVar[str] = "resale.ListingCreated"
    listing_id: int
    ticket_id: int
    seller_id: int
    event_id: int
    price: str
    currency: str


class ListingRepriced(ListingCreated, frozen=True):
    TYPE: ClassVar[str] = "resale.ListingRepriced"


class ListingCancelled(Event, frozen=True):
    TYPE: ClassVar[str] = "resale.ListingCancelled"
    listing_id: int
    ticket_id: int
    reason: str


class ListingSold(Event, frozen=True):
    TYPE: ClassVar[str] = "resale.ListingSold"
    listing_id: int
    ticket_id: int
    seller_id: int
    buyer_id: int
    price: str
    currency: str
    purchase_id: int | None = None


class ResaleRefunded(Event, frozen=True):
    TYPE: ClassVar[str] = "resale.ResaleRefunded"
    listing_id: int
    ticket_id: int
    buyer_id: int
    amount: str
    currency: str
    reason: str


register(ListingCreated, ListingRepriced, ListingCancelled, ListingSold, ResaleRefunded)
