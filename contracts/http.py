"""HTTP response shapes that more than one service answers with (API.md §9 TicketDetails:
ordering answers it for a ticket's owner, resale for listings and purchases)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from contracts.timeutil import naive_utc


def money(value: Decimal | None) -> float | None:
    """Money leaves as a JSON number (API.md §1.4)."""
    return None if value is None else float(value)


def ticket_details(row: Any) -> dict[str, Any]:
    """TicketDetails from a row with these labels; every field filled (API.md §9)."""
    return {
        "ticket_id": row.ticket_id,
        "type_id": row.type_id,
        "seat": row.seat,
        "owner_id": row.owner_id,
        "resell_price": money(row.resell_price),
        "original_price": money(row.original_price),
        "event_name": row.event_name,
        "event_start_date": naive_utc(row.event_start_date),
        "event_location": row.event_location,
        "ticket_type_description": row.ticket_type_description,
        "event_id": row.event_id,
        "status": row.status,
    }
