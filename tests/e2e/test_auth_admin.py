"""Administrator endpoints: organizer decisions (API.md §3.12, §3.13), approve (§3.14),
ban and unban (§3.15, §3.16), user details (§3.19)."""

from __future__ import annotations

import httpx

from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    bearer,
    claims,
    login,
    register_customer,
    register_organizer,
    sign_in,
    verified_organizer,
)
from tests.support.system import System

VERIFY_ORGANIZER = "/api/auth/verify-organizer"


async def decide(api: httpx.AsyncClient, admin: str, organizer: Account, approve: bool) -> dict:
    response = await api.post(
        VERIFY_ORGANIZER,
        json={"organizer_id": organizer.role_id, "approve": approve},
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def details(api: httpx.AsyncClient, admin: str, user_id: int) -> dict:
    response = await api.get(f"/api/auth/users/{user_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_admin_endpoints_refuse_anonymous_and_non_admins(api: httpx.AsyncClient) -> None:
    customer = await active_customer(api, await admin_token(api))
    for method, path in (
        ("POST", VERIFY_ORGANIZER),
        ("GET", "/api/auth/pending-organizers"),
        ("POST", "/api/auth/approve-user/1"),
        ("POST", "/api/auth/ban-user/1"),
        ("POST", "/api/auth/unban-user/1"),
        ("GET", "/api/auth/users"),
        ("GET", "/api/auth/users/stats"),
        ("GET", "/api/auth/users/1"),
    ):
        anonymous = await api.request(method, path)
        assert anonymous.status_code == 401, path
        assert anonymous.json() == {"detail": "Not authenticated"}
        forbidden = await api.request(method, path, headers=customer.headers)
        assert forbidden.status_code == 403, path
        assert forbidden.json() == {"detail": "Not an administrator"}


async def test_approving_an_organizer_verifies_them(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    organizer = await register_organizer(api)
    pending = await api.get("/api/auth/pending-organizers", headers=bearer(admin))
    assert organizer.user_id in [u["user_id"] for u in pending.json()]
    ids = [u["user_id"] for u in pending.json()]
    assert ids == sorted(ids) and pending.headers["x-total-count"] == str(len(ids))
    body = await decide(api, admin, organizer, approve=True)
    assert body["is_verified"] is True and body["account_state"] == "active"
    assert body["organizer_id"] == organizer.role_id and body["user_type"] == "organizer"
    assert set(body) == {
        "user_id",
        "email",
        "login",
        "first_name",
        "last_name",
        "user_type",
        "is_active",
        "organizer_id",
        "company_name",
        "is_verified",
        "account_state",
    }
    pending = await api.get("/api/auth/pending-organizers", headers=bearer(admin))
    assert organizer.user_id not in [u["user_id"] for u in pending.json()]
    # Only tokens issued after the verification say so.
    assert "verified" not in claims(organizer.token)
    await sign_in(api, organizer)
    assert claims(organizer.token)["verified"] is True
    assert await decide(api, admin, organizer, approve=True) == body  # repeating changes nothing


async def test_rejecting_an_organizer_bans_them_until_approved(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    organizer = await register_organizer(api)
    body = await decide(api, admin, organizer, approve=False)
    assert body["is_verified"] is False and body["account_state"] == "banned"
    assert body["is_active"] is False
    refused = await login(api, organizer.email, organizer.password)
    assert refused.status_code == 403 and refused.json() == {"detail": "Account banned"}
    held = await api.get("/api/user/me", headers=organizer.headers)
    assert held.status_code == 403 and held.json() == {"detail": "Account banned"}
    assert await decide(api, admin, organizer, approve=False) == body
    approved = await decide(api, admin, organizer, approve=True)
    assert approved["account_state"] == "active" and approved["is_verified"] is True
    assert (await login(api, organizer.email, organizer.password)).json()["token"]


async def test_approval_does_not_lift_a_ban(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    organizer = await register_organizer(api)
    await api.post(f"/api/auth/ban-user/{organizer.user_id}", headers=bearer(admin))
    body = await decide(api, admin, organizer, approve=True)
    assert body["is_verified"] is True and body["account_state"] == "banned"


async def test_verify_organizer_errors(api: httpx.AsyncClient) -> None:
    admin = bearer(await admin_token(api))
    missing = await api.post(VERIFY_ORGANIZER, json={"organizer_id": 1}, headers=admin)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "approve"]
    for organizer_id in (0, -1, 2_000_000_000):
        response = await api.post(
            VERIFY_ORGANIZER, json={"organizer_id": organizer_id, "approve": True}, headers=admin
        )
        assert response.status_code == 404 and response.json() == {"detail": "Organizer not found"}
    too_big = await api.post(
        VERIFY_ORGANIZER, json={"organizer_id": 2**31, "approve": True}, headers=admin
    )
    assert too_big.status_code == 422


async def test_approve_user_activates_only_that_customer(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer, bystander = await register_customer(api), await register_customer(api)
    response = await api.post(f"/api/auth/approve-user/{customer.user_id}", headers=bearer(admin))
    assert response.status_code == 200
    assert response.json()["message"] == "Account activated successfully. You are now logged in."
    assert claims(response.json()["token"])["user_id"] == customer.user_id
    assert (await details(api, admin, customer.user_id))["account_state"] == "active"
    assert (await details(api, admin, bystander.user_id))["account_state"] == "unverified"
    again = await api.post(f"/api/auth/approve-user/{customer.user_id}", headers=bearer(admin))
    assert again.status_code == 400 and again.json() == {"detail": "User is active"}


async def test_approve_user_errors_in_order(api: httpx.AsyncClient) -> None:
    admin = bearer(await admin_token(api))
    not_int = await api.post("/api/auth/approve-user/abc", headers=admin)
    assert not_int.status_code == 422 and not_int.json()["detail"][0]["loc"] == ["path", "user_id"]
    for user_id in (0, -5, 2_000_000_000, 99_999_999_999):
        response = await api.post(f"/api/auth/approve-user/{user_id}", headers=admin)
        assert response.status_code == 404 and response.json() == {"detail": "User not found"}
    banned = await register_customer(api)
    await api.post(f"/api/auth/ban-user/{banned.user_id}", headers=admin)
    response = await api.post(f"/api/auth/approve-user/{banned.user_id}", headers=admin)
    assert response.status_code == 400 and response.json() == {"detail": "User is banned"}


async def test_ban_refuses_tokens_refresh_and_login(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    response = await api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    assert response.status_code == 200 and response.json() == {"message": "User has been banned"}
    me = await api.get("/api/user/me", headers=customer.headers)
    assert me.status_code == 403 and me.json() == {"detail": "Account banned"}
    refresh = await api.post("/api/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert refresh.status_code == 401 and refresh.json() == {"detail": "Invalid refresh token"}
    denied = await login(api, customer.email, customer.password)
    assert denied.status_code == 403 and denied.json() == {"detail": "Account banned"}
    assert (await details(api, admin, customer.user_id))["account_state"] == "banned"


async def test_ban_errors_in_order(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    me = claims(admin)["user_id"]
    assert (await api.post("/api/auth/ban-user/x", headers=bearer(admin))).status_code == 422
    missing = await api.post("/api/auth/ban-user/0", headers=bearer(admin))
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}
    self_ban = await api.post(f"/api/auth/ban-user/{me}", headers=bearer(admin))
    assert self_ban.status_code == 400 and self_ban.json() == {"detail": "Cannot ban yourself"}
    other = await api.post(
        "/api/auth/register/admin",
        json={
            "email": f"adm-{claims(admin)['jti'][:8]}@example.com",
            "login": f"adm-{claims(admin)['jti'][:12]}",
            "password": "Admin1234",
            "first_name": "A",
            "last_name": "B",
            "admin_secret_key": "resellio-dev-admin-secret",
        },
        headers=bearer(admin),
    )
    other_id = claims(other.json()["token"])["user_id"]
    response = await api.post(f"/api/auth/ban-user/{other_id}", headers=bearer(admin))
    assert response.status_code == 403
    assert response.json() == {"detail": "Cannot ban administrator accounts"}
    customer = await register_customer(api)
    await api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    twice = await api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    assert twice.status_code == 400 and twice.json() == {"detail": "User is already banned"}


async def test_unban_restores_the_state_before_the_ban(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    active = await active_customer(api, admin)
    unverified = await register_customer(api)
    pending = await register_organizer(api)
    verified = await verified_organizer(api, admin)
    for account in (active, unverified, pending, verified):
        ban = await api.post(f"/api/auth/ban-user/{account.user_id}", headers=bearer(admin))
        assert ban.status_code == 200
        unban = await api.post(f"/api/auth/unban-user/{account.user_id}", headers=bearer(admin))
        assert unban.status_code == 200
        assert unban.json() == {"message": "User has been unbanned"}
    assert (await details(api, admin, active.user_id))["account_state"] == "active"
    assert (await details(api, admin, unverified.user_id))["account_state"] == "unverified"
    after_pending = await details(api, admin, pending.user_id)
    assert (after_pending["account_state"], after_pending["is_verified"]) == ("active", False)
    after_verified = await details(api, admin, verified.user_id)
    assert (after_verified["account_state"], after_verified["is_verified"]) == ("active", True)
    # Tokens issued before the ban stay invalid; a new login works.
    old = await api.get("/api/user/me", headers=active.headers)
    assert old.status_code == 401 and old.json() == {"detail": "Token has been revoked"}
    await sign_in(api, active)
    assert (await api.get("/api/user/me", headers=active.headers)).status_code == 200


async def test_unbanning_a_rejected_organizer_makes_them_pending(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    organizer = await register_organizer(api)
    await decide(api, admin, organizer, approve=False)
    response = await api.post(f"/api/auth/unban-user/{organizer.user_id}", headers=bearer(admin))
    assert response.status_code == 200
    body = await details(api, admin, organizer.user_id)
    assert (body["account_state"], body["is_verified"]) == ("active", False)
    pending = await api.get("/api/auth/pending-organizers", headers=bearer(admin))
    assert organizer.user_id in [u["user_id"] for u in pending.json()]
    # Tokens issued before the ban stay invalid (§3.16), the rejection's as a ban-user ban's:
    # at the gateway, and in auth itself. Pending again, a login gets no token (§3.4).
    revoked = {"detail": "Token has been revoked"}
    old = await api.get("/api/user/me", headers=organizer.headers)
    assert (old.status_code, old.json()) == (401, revoked)
    async with httpx.AsyncClient(base_url=system.url("auth"), timeout=30) as auth:
        direct = await auth.get("/api/user/me", headers=organizer.headers)
    assert (direct.status_code, direct.json()) == (401, revoked)
    again = await login(api, organizer.email, organizer.password)
    assert again.status_code == 200 and again.json()["token"] == ""


async def test_unban_errors(api: httpx.AsyncClient) -> None:
    admin = bearer(await admin_token(api))
    assert (await api.post("/api/auth/unban-user/1.5", headers=admin)).status_code == 422
    missing = await api.post("/api/auth/unban-user/2147483647", headers=admin)
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}
    for account in (await register_customer(api), await register_organizer(api)):
        response = await api.post(f"/api/auth/unban-user/{account.user_id}", headers=admin)
        assert response.status_code == 400 and response.json() == {"detail": "User is not banned"}


async def test_user_details_by_id(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer = await register_customer(api)
    body = await details(api, admin, customer.user_id)
    assert body == {
        "user_id": customer.user_id,
        "email": customer.email,
        "login": customer.login,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "user_type": "customer",
        "is_active": False,
        "organizer_id": None,
        "company_name": None,
        "is_verified": None,
        "account_state": "unverified",
    }
    assert (await api.get("/api/auth/users/abc", headers=bearer(admin))).status_code == 422
    missing = await api.get("/api/auth/users/0", headers=bearer(admin))
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}
