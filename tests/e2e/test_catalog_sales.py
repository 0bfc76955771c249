"""Catalog rules that depend on what ordering has sold (API.md §6.1, §6.5, §6.8, §7.3, §7.4),
with real purchases through ordering and no pause between the purchase and the rule."""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
from typing import Any

import httpx

from tests.support.actors import Account, active_customer
from tests.support.catalog_actors import approved_event, new_ticket_type
from tests.support.catalog_fixtures import admin, organizer, venue  # noqa: F401  (fixtures)
from tests.support.shop import buy, eventually


async def test_max_count_never_below_what_was_just_sold(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=5)
    buyer = await active_customer(api, admin)
    await buy(api, buyer, vip["type_id"], 3)
    path = f"/api/ticket-types/{vip['type_id']}"
    refused = await api.put(path, json={"max_count": 2}, headers=organizer.headers)
    assert (refused.status_code, refused.json()["detail"]) == (
        400,
        "max_count cannot be lower than the number of tickets sold (3)",
    )
    exact = await api.put(path, json={"max_count": 3}, headers=organizer.headers)
    assert exact.status_code == 200 and exact.json()["max_count"] == 3


async def test_a_ticket_type_with_an_issued_ticket_cannot_be_deleted(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=5)
    await buy(api, await active_customer(api, admin), vip["type_id"], 1)
    refused = await api.delete(f"/api/ticket-types/{vip['type_id']}", headers=organizer.headers)
    assert (refused.status_code, refused.json()["detail"]) == (
        400,
        "Cannot delete a ticket type with sold tickets",
    )


async def test_notify_counts_distinct_holders_of_valid_tickets(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=10)
    first, second = await active_customer(api, admin), await active_customer(api, admin)
    await buy(api, first, vip["type_id"], 2)
    await buy(api, second, vip["type_id"], 1)
    path = f"/api/events/{event['event_id']}/notify"
    told = await api.post(path, json={"message": "Bring an umbrella"}, headers=organizer.headers)
    assert told.status_code == 200 and told.json()["recipients_affected"] == 2

    # Cancelling is allowed with sales; once refunded, nobody holds a valid ticket.
    cancelled = await api.delete(f"/api/events/{event['event_id']}", headers=organizer.headers)
    assert cancelled.status_code == 200 and cancelled.json() is True

    async def nobody_left() -> bool:
        again = await api.post(path, headers=organizer.headers)
        return again.status_code == 200 and again.json()["recipients_affected"] == 0

    assert await eventually(nobody_left)


async def test_sold_out_events_leave_the_available_filter(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"], total_tickets=2)
    params = {"search": event["name"], "has_available_tickets": "true"}
    assert len((await api.get("/api/events", params=params)).json()) == 1
    await buy(api, await active_customer(api, admin), (await _types(api, event))[0]["type_id"], 2)

    async def sold_out() -> bool:
        listed = await api.get("/api/events", params=params)
        return listed.json() == [] and listed.headers["x-total-count"] == "0"

    assert await eventually(sold_out)
    unsold = await api.get("/api/events", params={**params, "has_available_tickets": "false"})
    assert [e["event_id"] for e in unsold.json()] == [event["event_id"]]


async def _types(api: httpx.AsyncClient, event: dict[str, Any]) -> list[dict[str, Any]]:
    response = await api.get("/api/ticket-types", params={"event_id": event["event_id"]})
    return response.json()  # type: ignore[no-any-return]
