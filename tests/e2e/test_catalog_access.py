"""Who may touch an event, a ticket type or a venue (API.md §2.2, §2.4, §6, §7), and
read-your-writes across services (§1.8): every refusal tested, none changes anything."""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
from typing import Any

import httpx
import pytest

from tests.support.actors import (
    Account,
    active_customer,
    bearer,
    claims,
    register_organizer,
    sign_in,
    verified_organizer,
)
from tests.support.catalog_actors import (
    approved_event,
    event_body,
    iso,
    new_event,
    ticket_types_of,
)
from tests.support.catalog_fixtures import admin, venue  # noqa: F401  (fixtures)
from tests.support.system import System

REFUSED_ORGANIZER = {"Organizer not verified", "Account banned"}


@pytest.fixture(scope="module")
async def owner(api: httpx.AsyncClient, admin: str) -> Account:
    return await verified_organizer(api, admin)


@pytest.fixture(scope="module")
async def target(
    api: httpx.AsyncClient, admin: str, owner: Account, venue: dict[str, Any]
) -> dict[str, Any]:
    """An approved event of `owner` and its standard ticket type."""
    event = await approved_event(api, admin, owner, venue["location_id"])
    [standard] = await ticket_types_of(api, event["event_id"])
    return {**event, "type_id": standard["type_id"]}


def organizer_writes(
    target: dict[str, Any], venue_id: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every organizer write that names an event or a ticket type, with a valid body."""
    eid, tid = target["event_id"], target["type_id"]
    return [
        ("POST", "/api/events", {"json": event_body(venue_id)}),
        ("PUT", f"/api/events/{eid}", {"json": {"name": "Taken over"}}),
        ("DELETE", f"/api/events/{eid}", {}),
        ("POST", f"/api/events/{eid}/notify", {"json": {"message": "hello"}}),
        (
            "POST",
            "/api/ticket-types",
            {"json": {"event_id": eid, "max_count": 5, "price": 1, "available_from": iso()}},
        ),
        ("PUT", f"/api/ticket-types/{tid}", {"json": {"price": 1}}),
        ("DELETE", f"/api/ticket-types/{tid}", {}),
    ]


async def snapshot(api: httpx.AsyncClient, admin: str, target: dict[str, Any]) -> Any:
    event = (await api.get(f"/api/events/{target['event_id']}", headers=bearer(admin))).json()
    types = await ticket_types_of(api, target["event_id"], admin)
    return {k: v for k, v in event.items() if k not in ("ticket_types", "resale")}, types


async def test_strangers_customers_and_anonymous_are_refused_everywhere(
    api: httpx.AsyncClient, admin: str, target: dict[str, Any], venue: dict[str, Any]
) -> None:
    before = await snapshot(api, admin, target)
    stranger = await verified_organizer(api, admin)
    customer = await active_customer(api, admin)
    expected_stranger = {
        f"/api/events/{target['event_id']}": {
            "PUT": "Not authorized to update this event",
            "DELETE": "Not authorized to cancel this event",
        },
        f"/api/events/{target['event_id']}/notify": {
            "POST": "Not authorized to notify participants of this event"
        },
    }
    for method, path, kwargs in organizer_writes(target, venue["location_id"]):
        if path == "/api/events":
            continue  # creating names no existing event
        answer = await api.request(method, path, headers=stranger.headers, **kwargs)
        wanted = expected_stranger.get(path, {}).get(
            method, "Not authorized to manage ticket types for this event"
        )
        assert (answer.status_code, answer.json()["detail"]) == (403, wanted), (method, path)
        as_customer = await api.request(method, path, headers=customer.headers, **kwargs)
        assert (as_customer.status_code, as_customer.json()["detail"]) == (403, "Not an organizer")
        anonymous = await api.request(method, path, **kwargs)
        assert (anonymous.status_code, anonymous.json()["detail"]) == (401, "Not authenticated")
        assert anonymous.headers["www-authenticate"] == "Bearer"
    for verb in ("authorize", "reject"):
        for headers in (stranger.headers, customer.headers):
            denied = await api.post(f"/api/events/{verb}/{target['event_id']}", headers=headers)
            assert (denied.status_code, denied.json()["detail"]) == (403, "Not an administrator")
    for method in ("PUT", "DELETE"):
        kwargs = {"json": {"name": "x"}} if method == "PUT" else {}
        for headers in (stranger.headers, customer.headers):
            denied = await api.request(
                method, f"/api/locations/{venue['location_id']}", headers=headers, **kwargs
            )
            assert (denied.status_code, denied.json()["detail"]) == (403, "Not an administrator")
    assert await snapshot(api, admin, target) == before


async def test_another_organizers_hidden_event_is_answered_like_an_unknown_one(
    api: httpx.AsyncClient, admin: str, owner: Account, venue: dict[str, Any]
) -> None:
    """A pending or rejected event is invisible to other organizers (API.md §6), so each write
    naming it answers that endpoint's 404, as for an id naming nothing (§1.2): a 403 would
    tell them it exists. Its owner and an administrator are not refused."""
    stranger = await verified_organizer(api, admin)
    pending = await new_event(api, owner, venue["location_id"])
    rejected = await new_event(api, owner, venue["location_id"])
    assert (
        await api.post(f"/api/events/reject/{rejected['event_id']}", headers=bearer(admin))
    ).status_code == 200
    for event in (pending, rejected):
        [standard] = await ticket_types_of(api, event["event_id"], admin)
        hidden = {**event, "type_id": standard["type_id"]}
        before = await snapshot(api, admin, hidden)
        unknown = {
            "/api/ticket-types": f"Event with id {event['event_id']} not found",
            f"/api/ticket-types/{standard['type_id']}": "Ticket type not found",
        }
        for method, path, kwargs in organizer_writes(hidden, venue["location_id"]):
            if path == "/api/events":
                continue
            answer = await api.request(method, path, headers=stranger.headers, **kwargs)
            wanted = unknown.get(path, "Event not found")
            assert (answer.status_code, answer.json()["detail"]) == (404, wanted), (method, path)
        assert await snapshot(api, admin, hidden) == before
    renamed = await api.put(
        f"/api/events/{pending['event_id']}", json={"name": "Mine"}, headers=owner.headers
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Mine"
    cancelled = await api.delete(f"/api/events/{pending['event_id']}", headers=bearer(admin))
    assert cancelled.status_code == 200 and cancelled.json() is True


async def test_an_unverified_organizer_cannot_write(
    api: httpx.AsyncClient, admin: str, target: dict[str, Any], venue: dict[str, Any]
) -> None:
    before = await snapshot(api, admin, target)
    pending = await register_organizer(api)
    assert (await api.get("/api/events", headers=pending.headers)).status_code == 200  # reads work
    for method, path, kwargs in organizer_writes(target, venue["location_id"]):
        answer = await api.request(method, path, headers=pending.headers, **kwargs)
        assert (answer.status_code, answer.json()["detail"]) == (403, "Organizer not verified"), (
            path
        )
    assert await snapshot(api, admin, target) == before


async def test_verify_then_log_in_then_create_at_once(
    api: httpx.AsyncClient, admin: str, venue: dict[str, Any]
) -> None:
    for _ in range(3):
        organizer = await register_organizer(api)
        decision = {"organizer_id": organizer.role_id, "approve": True}
        verified = await api.post(
            "/api/auth/verify-organizer", json=decision, headers=bearer(admin)
        )
        assert verified.status_code == 200
        await sign_in(api, organizer)
        created = await api.post(
            "/api/events", json=event_body(venue["location_id"]), headers=organizer.headers
        )
        assert created.status_code == 200, created.text
        assert created.json()["organizer_id"] == organizer.role_id


async def test_a_token_from_before_the_verification_never_passes(
    api: httpx.AsyncClient, admin: str, venue: dict[str, Any]
) -> None:
    organizer = await register_organizer(api)
    old_token = organizer.token
    assert not claims(old_token).get("verified")
    decision = {"organizer_id": organizer.role_id, "approve": True}
    assert (
        await api.post("/api/auth/verify-organizer", json=decision, headers=bearer(admin))
    ).status_code == 200
    refused = await api.post(
        "/api/events", json=event_body(venue["location_id"]), headers=bearer(old_token)
    )
    assert (refused.status_code, refused.json()["detail"]) == (403, "Organizer not verified")
    await sign_in(api, organizer)
    assert claims(organizer.token).get("verified") is True
    fresh = await api.post(
        "/api/events", json=event_body(venue["location_id"]), headers=organizer.headers
    )
    assert fresh.status_code == 200


@pytest.mark.parametrize("decision", ["reject", "ban"])
async def test_a_rejected_or_banned_organizer_is_refused_at_once_with_an_old_token(
    api: httpx.AsyncClient, system: System, admin: str, venue: dict[str, Any], decision: str
) -> None:
    organizer = await verified_organizer(api, admin)
    event = await approved_event(api, admin, organizer, venue["location_id"])
    [standard] = await ticket_types_of(api, event["event_id"])
    mine = {**event, "type_id": standard["type_id"]}
    before = await snapshot(api, admin, mine)
    if decision == "reject":
        body = {"organizer_id": organizer.role_id, "approve": False}
        done = await api.post("/api/auth/verify-organizer", json=body, headers=bearer(admin))
    else:
        done = await api.post(f"/api/auth/ban-user/{organizer.user_id}", headers=bearer(admin))
    assert done.status_code == 200, done.text
    for method, path, kwargs in organizer_writes(mine, venue["location_id"]):
        answer = await api.request(method, path, headers=organizer.headers, **kwargs)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["detail"] in REFUSED_ORGANIZER
    # Catalog refuses on its own, not only because the gateway follows auth's events.
    async with httpx.AsyncClient(base_url=system.url("catalog")) as catalog:
        direct = await catalog.post(
            "/api/events", json=event_body(venue["location_id"]), headers=organizer.headers
        )
    # A rejected organizer's account is banned (API.md §2.2), and banned comes first (§2.4).
    assert (direct.status_code, direct.json()["detail"]) == (403, "Account banned")
    assert await snapshot(api, admin, mine) == before
