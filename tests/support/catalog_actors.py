"""Test helpers for the catalog: venues, events and ticket types made through the gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.actors import Account, bearer, unique


def iso(days: float = 0, hours: float = 0) -> str:
    """A time relative to now, as an ISO 8601 UTC string."""
    return (datetime.now(UTC) + timedelta(days=days, hours=hours)).isoformat()


async def new_location(api: httpx.AsyncClient, admin: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"Venue {unique()}",
        "address": "1 Main Street",
        "city": "Warsaw",
        "country": "Poland",
        "zipcode": "00-001",
        **overrides,
    }
    response = await api.post("/api/locations", json=body, headers=bearer(admin))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def event_body(location_id: int, **overrides: Any) -> dict[str, Any]:
    """A valid 6.3 body: an event in ten days, sales open now."""
    return {
        "name": f"Event {unique()}",
        "description": "A fine evening",
        "start_date": iso(days=10),
        "end_date": iso(days=10, hours=3),
        "minimum_age": 18,
        "location_id": location_id,
        "category": ["Music"],
        "total_tickets": 100,
        "standard_ticket_price": 50,
        "ticket_sales_start": iso(days=-1),
        **overrides,
    }


async def new_event(
    api: httpx.AsyncClient, organizer: Account, location_id: int, **overrides: Any
) -> dict[str, Any]:
    body = event_body(location_id, **overrides)
    response = await api.post("/api/events", json=body, headers=organizer.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def approve(api: httpx.AsyncClient, admin: str, event_id: int) -> None:
    response = await api.post(f"/api/events/authorize/{event_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text


async def approved_event(
    api: httpx.AsyncClient, admin: str, organizer: Account, location_id: int, **overrides: Any
) -> dict[str, Any]:
    event = await new_event(api, organizer, location_id, **overrides)
    await approve(api, admin, event["event_id"])
    return {**event, "status": "created"}


async def ticket_types_of(
    api: httpx.AsyncClient, event_id: int, token: str = ""
) -> list[dict[str, Any]]:
    headers = bearer(token) if token else {}
    response = await api.get("/api/ticket-types", params={"event_id": event_id}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def new_ticket_type(
    api: httpx.AsyncClient, organizer: Account, event_id: int, **overrides: Any
) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "description": "VIP",
        "max_count": 10,
        "price": 150,
        "available_from": iso(days=-1),
        **overrides,
    }
    response = await api.post("/api/ticket-types", json=body, headers=organizer.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
