"""Auth's events (API.md §11) leave through the outbox with the request's correlation id, and
the audit log (§2.6) records tokens issued for others, bans, unbans and organizer decisions."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.actors import (
    active_customer,
    admin_token,
    bearer,
    claims,
    register_customer,
    register_organizer,
    unique,
)
from tests.support.auth_db import auth_sql
from tests.support.system import System


async def events_of(system: System, user_id: int) -> list[tuple[str, dict[str, Any], str]]:
    rows = await auth_sql(
        system,
        "SELECT type, payload, correlation_id FROM auth.outbox WHERE aggregate_id = :id ORDER BY id",
        id=str(user_id),
    )
    return [(row.type, row.payload, row.correlation_id) for row in rows]


async def audit_of(system: System, user_id: int) -> list[Any]:
    return await auth_sql(
        system,
        "SELECT action, actor_user_id, jti, request_id FROM auth.audit_log"
        " WHERE target_user_id = :id ORDER BY id",
        id=user_id,
    )


async def test_a_customers_life_is_published_and_audited(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    admin_id = claims(admin)["user_id"]
    customer = await register_customer(api)
    request_id = unique("req-")
    approved = await api.post(
        f"/api/auth/approve-user/{customer.user_id}",
        headers={**bearer(admin), "X-Request-ID": request_id},
    )
    token = approved.json()["token"]
    await api.put("/api/user/update-profile", json={"first_name": "Eve"}, headers=bearer(token))
    await api.post(
        "/api/user/change-password",
        json={"current_password": customer.password, "new_password": "Changed123"},
        headers=bearer(token),
    )
    await api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    await api.post(f"/api/auth/unban-user/{customer.user_id}", headers=bearer(admin))
    events = await events_of(system, customer.user_id)
    assert [e[0] for e in events] == [
        "auth.UserRegistered",
        "auth.EmailVerified",
        "auth.UserProfileUpdated",
        "auth.PasswordChanged",
        "auth.UserBanned",
        "auth.UserUnbanned",
    ]
    registered, verified, profile, _, banned, unbanned = (e[1] for e in events)
    assert registered["account_state"] == "unverified" and registered["role"] == "customer"
    assert verified == {
        "user_id": customer.user_id,
        "method": "admin_approval",
        "approved_by": admin_id,
    }
    assert events[1][2] == request_id
    assert profile["first_name"] == "Eve" and profile["login"] == customer.login
    assert banned["account_state"] == "banned" and banned["role"] == "customer"
    assert unbanned["account_state"] == "active"
    for payload in (e[1] for e in events):
        assert not {"password", "password_hash", "token"} & set(payload)
    audit = await audit_of(system, customer.user_id)
    assert [a.action for a in audit] == ["approve_user", "ban_user", "unban_user"]
    assert audit[0].jti == claims(token)["jti"] and audit[0].request_id == request_id
    assert all(a.actor_user_id == admin_id for a in audit)


async def test_organizer_decisions_and_logout_are_published(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    organizer = await register_organizer(api)
    for approve in (False, True):
        await api.post(
            "/api/auth/verify-organizer",
            json={"organizer_id": organizer.role_id, "approve": approve},
            headers=bearer(admin),
        )
    events = await events_of(system, organizer.user_id)
    assert [e[0] for e in events] == [
        "auth.UserRegistered",
        "auth.OrganizerRejected",
        "auth.OrganizerVerified",
    ]
    assert events[1][1]["account_state"] == "banned"
    assert events[1][1]["organizer_id"] == organizer.role_id
    assert events[2][1]["account_state"] == "active"
    audit = await audit_of(system, organizer.user_id)
    assert [a.action for a in audit] == ["reject_organizer", "verify_organizer"]

    customer = await active_customer(api, admin)
    await api.post("/api/auth/logout", headers=customer.headers)
    await api.post("/api/auth/logout", headers=customer.headers)  # nothing new the second time
    revoked = [e for e in await events_of(system, customer.user_id) if "Revoked" in e[0]]
    assert len(revoked) == 1 and revoked[0][1]["jti"] == claims(customer.token)["jti"]
