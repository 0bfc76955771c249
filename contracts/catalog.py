"""Events published by catalog (API.md §11). Money is a decimal string plus currency."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from contracts.envelope import Event, register


class LocationCreated(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.LocationCreated"
    location_id: int
    name: str
    address: str
    city: str
    country: str
    zipcode: str | None = None


class LocationUpdated(LocationCreated, frozen=True):
    TYPE: ClassVar[str] = "catalog.LocationUpdated"


class LocationDeleted(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.LocationDeleted"
    location_id: int


class EventCreated(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.EventCreated"
    event_id: int
    organizer_id: int
    name: str
    start_date: datetime
    end_date: datetime
    location_id: int
    location_name: str
    status: str
    minimum_age: int | None = None
    categories: list[str] = []
    resale_price_cap_percent: int | None = None
    description: str | None = None
    total_tickets: int | None = None  # capacity: sum of the ticket types' max_count


class EventUpdated(EventCreated, frozen=True):
    TYPE: ClassVar[str] = "catalog.EventUpdated"


class EventApproved(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.EventApproved"
    event_id: int
    by: int


class EventRejected(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.EventRejected"
    event_id: int
    by: int


class EventCancelled(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.EventCancelled"
    event_id: int
    by: int
    at: datetime


class TicketTypeCreated(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.TicketTypeCreated"
    type_id: int
    event_id: int
    max_count: int
    price: str
    currency: str
    available_from: datetime
    description: str | None = None
    # The event's state when the type changed, so ordering needs no second lookup.
    event_status: str | None = None
    event_start_date: datetime | None = None
    event_end_date: datetime | None = None
    # Catalog's count of changes to the type. Ordering applies a max_count only from an event
    # at least as new as the last limit catalog set in it directly (`POST
    # /internal/ticket-types/{id}/limit`, before committing a lower capacity or a deletion).
    revision: int = 0


class TicketTypeUpdated(TicketTypeCreated, frozen=True):
    TYPE: ClassVar[str] = "catalog.TicketTypeUpdated"


class TicketTypeDeleted(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.TicketTypeDeleted"
    type_id: int
    event_id: int


class ParticipantsNotified(Event, frozen=True):
    TYPE: ClassVar[str] = "catalog.ParticipantsNotified"
    notification_id: str
    event_id: int
    message: str
    urgent: bool
    recipients_affected: int
    # Exactly the users counted (distinct holders of a valid ticket), each to be emailed once.
    recipient_user_ids: list[int] = []
    event_name: str | None = None


register(
    LocationCreated,
    LocationUpdated,
    LocationDeleted,
    EventCreated,
    EventUpdated,
    EventApproved,
    EventRejected,
    EventCancelled,
    TicketTypeCreated,
    TicketTypeUpdated,
    TicketTypeDeleted,
    ParticipantsNotified,
)
