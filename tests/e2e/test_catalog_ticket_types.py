"""Ticket types (API.md §7) and venues (§5) through the gateway."""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
from typing import Any

import httpx

from tests.support.actors import Account, active_customer, bearer, verified_organizer
from tests.support.catalog_actors import (
    approve,
    approved_event,
    iso,
    new_event,
    new_location,
    new_ticket_type,
    ticket_types_of,
)
from tests.support.catalog_fixtures import admin, organizer, venue  # noqa: F401  (fixtures)

TYPE_KEYS = {
    "type_id",
    "event_id",
    "description",
    "max_count",
    "price",
    "currency",
    "available_from",
}


def detail(response: httpx.Response) -> Any:
    return response.json()["detail"]


async def capacity(api: httpx.AsyncClient, organizer: Account, event_id: int) -> int:
    response = await api.get(f"/api/events/{event_id}", headers=organizer.headers)
    return int(response.json()["total_tickets"])


# ---- 7.2 create ----------------------------------------------------------------------------


async def test_create_raises_capacity_and_lists_by_type_id(
    api: httpx.AsyncClient, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await new_event(api, organizer, venue["location_id"])
    vip = await new_ticket_type(
        api, organizer, event["event_id"], price=99.999, currency="eur", type_id=5, description=None,
        available_from="2030-01-01T12:00:00+01:00",
    )  # fmt: skip
    assert set(vip) == TYPE_KEYS
    assert vip["price"] == 100.0 and vip["currency"] == "EUR" and vip["description"] is None
    assert vip["available_from"] == "2030-01-01T11:00:00"
    assert await capacity(api, organizer, event["event_id"]) == 110
    listed = await ticket_types_of(api, event["event_id"], organizer.token)
    assert [t["type_id"] for t in listed] == sorted(t["type_id"] for t in listed)
    assert listed[-1] == vip


async def test_create_checks_the_event_before_other_fields(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await new_event(api, organizer, venue["location_id"])
    other = await verified_organizer(api, admin)
    bad_rest = {"event_id": 987_654_321, "max_count": 0, "price": -1}
    no_event = await api.post("/api/ticket-types", json=bad_rest, headers=organizer.headers)
    assert (no_event.status_code, detail(no_event)) == (404, "Event with id 987654321 not found")
    for body in ({"max_count": 5}, {"event_id": "abc"}, {"event_id": None}):
        invalid = await api.post("/api/ticket-types", json=body, headers=organizer.headers)
        assert invalid.status_code == 422 and detail(invalid)[0]["loc"] == ["body", "event_id"]
    as_other = {**bad_rest, "event_id": event["event_id"]}
    # Pending, another organizer's event is answered like an unknown one (API.md §1.2, §6).
    hidden = await api.post("/api/ticket-types", json=as_other, headers=other.headers)
    assert (hidden.status_code, detail(hidden)) == (
        404,
        f"Event with id {event['event_id']} not found",
    )
    await approve(api, admin, event["event_id"])
    foreign = await api.post("/api/ticket-types", json=as_other, headers=other.headers)
    assert (foreign.status_code, detail(foreign)) == (
        403,
        "Not authorized to manage ticket types for this event",
    )
    rest = await api.post(
        "/api/ticket-types",
        json={**bad_rest, "event_id": event["event_id"]},
        headers=organizer.headers,
    )
    assert rest.status_code == 422
    assert {e["loc"][1] for e in detail(rest)} == {"max_count", "price", "available_from"}
    for change in (
        {"currency": "EURO"},
        {"currency": "E1R"},
        {"description": "d" * 256},
        {"max_count": 1_000_001},
    ):
        refused = await api.post(
            "/api/ticket-types",
            json={
                "event_id": event["event_id"],
                "max_count": 5,
                "price": 1,
                "available_from": iso(),
                **change,
            },
            headers=organizer.headers,
        )
        assert refused.status_code == 422, change
    assert len(await ticket_types_of(api, event["event_id"], organizer.token)) == 1  # nothing added


async def test_no_ticket_type_changes_on_rejected_or_cancelled_events(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    rejected = await new_event(api, organizer, venue["location_id"])
    assert (
        await api.post(f"/api/events/reject/{rejected['event_id']}", headers=bearer(admin))
    ).status_code == 200
    cancelled = await approved_event(api, admin, organizer, venue["location_id"])
    [standard] = await ticket_types_of(api, cancelled["event_id"])
    assert (
        await api.delete(f"/api/events/{cancelled['event_id']}", headers=organizer.headers)
    ).status_code == 200
    for event, status in ((rejected, "rejected"), (cancelled, "cancelled")):
        body = {"event_id": event["event_id"], "max_count": 5, "price": 1, "available_from": iso()}
        response = await api.post("/api/ticket-types", json=body, headers=organizer.headers)
        assert (response.status_code, detail(response)) == (
            400,
            f"Cannot modify ticket types of an event with status '{status}'",
        )
    changed = await api.put(
        f"/api/ticket-types/{standard['type_id']}", json={"price": 1}, headers=organizer.headers
    )
    assert (changed.status_code, detail(changed)) == (
        400,
        "Cannot modify ticket types of an event with status 'cancelled'",
    )


# ---- 7.3 update ----------------------------------------------------------------------------


async def test_update_changes_only_given_fields(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    [standard] = await ticket_types_of(api, event["event_id"])
    path = f"/api/ticket-types/{standard['type_id']}"
    response = await api.put(
        path, json={"price": 75.5, "max_count": 40, "currency": "PLN"}, headers=organizer.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**standard, "price": 75.5, "max_count": 40}
    assert await capacity(api, organizer, event["event_id"]) == 40
    other = await verified_organizer(api, admin)
    assert (await api.put(path, json={"price": "x"}, headers=other.headers)).status_code == 422
    assert (
        await api.put(path, json={"max_count": 0}, headers=organizer.headers)
    ).status_code == 422
    assert (
        await api.put("/api/ticket-types/abc", json={}, headers=organizer.headers)
    ).status_code == 422
    missing = await api.put("/api/ticket-types/0", json={"price": 1}, headers=organizer.headers)
    assert (missing.status_code, detail(missing)) == (404, "Ticket type not found")
    foreign = await api.put(path, json={"price": 1}, headers=other.headers)
    assert (foreign.status_code, detail(foreign)) == (
        403,
        "Not authorized to manage ticket types for this event",
    )
    assert (await ticket_types_of(api, event["event_id"]))[0]["price"] == 75.5


# ---- 7.4 delete ----------------------------------------------------------------------------


async def test_delete_lowers_capacity_and_refuses_strangers(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await new_event(api, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=7)
    path = f"/api/ticket-types/{vip['type_id']}"
    other = await verified_organizer(api, admin)
    hidden = await api.delete(path, headers=other.headers)  # a pending event's: unknown to them
    assert (hidden.status_code, detail(hidden)) == (404, "Ticket type not found")
    await approve(api, admin, event["event_id"])
    foreign = await api.delete(path, headers=other.headers)
    assert (foreign.status_code, detail(foreign)) == (
        403,
        "Not authorized to manage ticket types for this event",
    )
    for bad in ("0", "-1", "abc", "-" + "9" * 5000, "000"):
        assert (
            await api.delete(f"/api/ticket-types/{bad}", headers=organizer.headers)
        ).status_code == 422
    for unknown in (str(2**31), "9" * 5000):  # more digits than int() takes from a string
        gone = await api.delete(f"/api/ticket-types/{unknown}", headers=organizer.headers)
        assert (gone.status_code, detail(gone)) == (404, "Ticket type not found")
    done = await api.delete(path, headers=organizer.headers)
    assert done.status_code == 200 and done.json() is True
    assert await capacity(api, organizer, event["event_id"]) == 100
    again = await api.delete(path, headers=organizer.headers)
    assert (again.status_code, detail(again)) == (404, "Ticket type not found")


# ---- 7.1 list ------------------------------------------------------------------------------


async def test_list_filters_and_visibility(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    public = await approved_event(
        api, admin, organizer, venue["location_id"], standard_ticket_price=20
    )
    vip = await new_ticket_type(api, organizer, public["event_id"], price=200)
    pending = await new_event(api, organizer, venue["location_id"])
    got = await api.get(
        "/api/ticket-types", params={"event_id": public["event_id"], "min_price": 100}
    )
    assert got.json() == [vip] and got.headers["x-total-count"] == "1"
    got = await api.get(
        "/api/ticket-types", params={"event_id": public["event_id"], "max_price": 20}
    )
    assert [t["price"] for t in got.json()] == [20.0]
    got = await api.get("/api/ticket-types/", params={"type_id": vip["type_id"]})
    assert got.json() == [vip]
    assert (
        await api.get("/api/ticket-types", params={"event_id": pending["event_id"]})
    ).json() == []
    assert len(await ticket_types_of(api, pending["event_id"], organizer.token)) == 1
    customer = await active_customer(api, admin)
    assert await ticket_types_of(api, pending["event_id"], customer.token) == []
    for params in ({"min_price": -1}, {"max_price": "x"}, {"event_id": "x"}, {"type_id": 2**31}):
        assert (await api.get("/api/ticket-types", params=params)).status_code == 422, params


# ---- §5 venues -----------------------------------------------------------------------------


async def test_venues_crud_by_administrators(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    made = await new_location(api, admin, name="Zz Venue", zipcode=None)
    assert set(made) == {"location_id", "name", "address", "zipcode", "city", "country"}
    assert made["zipcode"] is None
    listed = await api.get("/api/locations/")
    assert made in listed.json() and listed.headers["x-total-count"] == str(len(listed.json()))
    keys = [(v["name"].encode(), v["location_id"]) for v in listed.json()]
    assert keys == sorted(keys)
    path = f"/api/locations/{made['location_id']}"
    renamed = await api.put(
        path, json={"name": "Renamed Hall", "zipcode": "12-345"}, headers=bearer(admin)
    )
    assert renamed.status_code == 200
    assert renamed.json() == {**made, "name": "Renamed Hall", "zipcode": "12-345"}
    event = await new_event(api, organizer, made["location_id"])
    assert event["location_name"] == "Renamed Hall"
    used = await api.delete(path, headers=bearer(admin))
    assert (used.status_code, detail(used)) == (
        400,
        "Cannot delete a location that is used by events",
    )
    spare = await new_location(api, admin)
    deleted = await api.delete(f"/api/locations/{spare['location_id']}", headers=bearer(admin))
    assert deleted.status_code == 200 and deleted.json() is True
    assert spare not in (await api.get("/api/locations")).json()


async def test_venue_errors(api: httpx.AsyncClient, admin: str, organizer: Account) -> None:
    body = {"name": "V", "address": "A", "city": "C", "country": "PL"}
    for change in (
        {"name": ""}, {"name": " "}, {"address": "a" * 256}, {"city": "c" * 101},
        {"country": None}, {"zipcode": "z" * 21}, {"name": 5},
    ):  # fmt: skip
        refused = await api.post("/api/locations", json={**body, **change}, headers=bearer(admin))
        assert refused.status_code == 422, change
    missing_fields = await api.post("/api/locations", json={}, headers=bearer(admin))
    assert {e["loc"][1] for e in detail(missing_fields)} == {"name", "address", "city", "country"}
    assert (await api.post("/api/locations", json=body)).status_code == 401
    denied = await api.post("/api/locations", json=body, headers=organizer.headers)
    assert (denied.status_code, detail(denied)) == (403, "Not an administrator")
    for method in ("put", "delete"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "put" else {}
        gone = await getattr(api, method)(
            "/api/locations/99999999", headers=bearer(admin), **kwargs
        )
        assert (gone.status_code, detail(gone)) == (404, "Location '99999999' not found")
        huge = await getattr(api, method)(
            f"/api/locations/+00{'9' * 5000}", headers=bearer(admin), **kwargs
        )  # more digits than int() takes from a string; named as its number reads
        assert (huge.status_code, detail(huge)) == (404, f"Location '{'9' * 5000}' not found")
        bad = await getattr(api, method)("/api/locations/abc", headers=bearer(admin), **kwargs)
        assert bad.status_code == 422
        denied = await getattr(api, method)("/api/locations/1", headers=organizer.headers, **kwargs)
        assert (denied.status_code, detail(denied)) == (403, "Not an administrator")
        assert (await getattr(api, method)("/api/locations/1", **kwargs)).status_code == 401
    made = await new_location(api, admin)
    blank = await api.put(
        f"/api/locations/{made['location_id']}", json={"city": ""}, headers=bearer(admin)
    )
    assert blank.status_code == 422
    assert made in (await api.get("/api/locations")).json()  # unchanged
