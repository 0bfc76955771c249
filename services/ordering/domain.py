"""The purchase rules R1–R5 of API.md §8, checked when a line is added and again at checkout.

A rule gets a ticket type joined with its event (`Offer`) and answers with the exact message.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from contracts.timeutil import as_utc
from services.kernel.errors import BadRequest

QUANTITY_TOO_LOW = "Quantity must be at least 1"


class Offer(msgspec.Struct, frozen=True):
    """A ticket type on sale, with what the rules need of its event."""

    type_id: int
    event_id: int
    description: str | None
    price: Decimal
    currency: str
    available_from: datetime
    max_count: int
    sold: int
    held: int
    event_name: str
    event_status: str
    end_date: datetime

    @property
    def label(self) -> str:
        return f"{self.event_name} - {self.description or 'selected type'}"


# An offer's columns, as a statement selects them (`t` the ticket type, `e` its event).
OFFER_SQL = """
t.type_id, t.event_id, t.description, t.price, t.currency, t.available_from, t.max_count,
t.sold, t.held, e.name AS event_name, e.status AS event_status, e.end_date
"""


def tickets_of_customer_sql(customer: str, event: str) -> str:
    """R5's count as an SQL expression: what the customer holds in the cart plus owns (not
    refunded) of the event (both given as SQL: a parameter or a column)."""
    return f"""(
  (SELECT coalesce(sum(h.quantity), 0) FROM ordering.cart_items h
     JOIN ordering.ticket_types ht ON ht.type_id = h.type_id
    WHERE h.user_id = {customer} AND ht.event_id = {event})
  + (SELECT count(*) FROM ordering.tickets o
      WHERE o.owner_id = {customer} AND o.event_id = {event} AND o.status <> 'refunded'))"""


def offer_from(row: Any) -> Offer:
    return Offer(**{name: getattr(row, name) for name in Offer.__struct_fields__})


def check_on_sale(offer: Offer, now: datetime) -> None:
    """R1 (event approved), R2 (sale started), R3 (event not ended), in that order."""
    name = offer.event_name
    if offer.event_status == "pending":
        raise BadRequest(f"Event '{name}' is not yet active.")
    if offer.event_status == "rejected":
        raise BadRequest(f"Event '{name}' is not available for sale.")
    if offer.event_status == "cancelled":
        raise BadRequest(f"Event '{name}' has been cancelled.")
    if as_utc(offer.available_from) > now:
        raise BadRequest(f"Ticket type with ID {offer.type_id} is not available for sale yet")
    if as_utc(offer.end_date) <= now:
        raise BadRequest(f"Event '{name}' has already ended.")


def not_enough(offer: Offer, left: int) -> BadRequest:
    """R4."""
    return BadRequest(
        f"Not enough tickets available for '{offer.label}'. Only {max(0, left)} left."
    )


def over_limit(limit: int) -> BadRequest:
    """R5."""
    return BadRequest(f"You can hold or buy at most {limit} tickets for this event")
