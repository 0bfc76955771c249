"""Email verification (API.md §3.8, §3.9), password reset (§3.10, §3.11), password change
(§4.4): real tokens from real mail."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.actors import (
    PASSWORD,
    RESET_SUBJECT,
    activate_by_email,
    active_customer,
    admin_token,
    bearer,
    claims,
    login,
    mail_text,
    mailed_token,
    register_customer,
    sign_in,
    unique,
)
from tests.support.auth_db import expire_mailed_tokens
from tests.support.shop import holding, waiting_for_lock
from tests.support.system import System

VERIFY = "/api/auth/verify-email"
RESEND = "/api/auth/resend-verification"
REQUEST_RESET = "/api/auth/request-password-reset"
RESET = "/api/auth/reset-password"
CHANGE = "/api/user/change-password"
USED = {"detail": "Invalid or already used verification token."}
RESEND_MESSAGE = {
    "message": "If your account is awaiting email verification, a new verification email has been sent"
}
RESET_MESSAGE = {"message": "If your email is registered, you will receive a password reset link"}
BAD_RESET = {"detail": "Invalid or expired reset token"}


async def test_email_link_activates_and_signs_in_once(
    api: httpx.AsyncClient, system: System
) -> None:
    customer = await register_customer(api)
    token = await mailed_token(system, customer.email)
    # A mail scanner's HEAD of the link uses nothing up: the gateway asks GET for a HEAD, but
    # not of this one GET that acts.
    scanned = await api.head(VERIFY, params={"token": token})
    assert scanned.status_code == 405, scanned.headers
    response = await api.get(VERIFY, params={"token": token})
    assert response.status_code == 200
    assert response.json()["message"] == "Account activated successfully. You are now logged in."
    assert claims(response.json()["token"])["user_id"] == customer.user_id
    me = await api.get("/api/user/me", headers=bearer(response.json()["token"]))
    assert me.json()["account_state"] == "active" and me.json()["is_active"] is True
    again = await api.get(VERIFY, params={"token": token})
    assert again.status_code == 400 and again.json() == USED
    assert (await login(api, customer.email, customer.password)).status_code == 200


async def test_verify_email_errors(api: httpx.AsyncClient, system: System) -> None:
    missing = await api.get(VERIFY)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["query", "token"]
    unknown = await api.get(VERIFY, params={"token": "x" * 43})
    assert unknown.status_code == 400 and unknown.json() == USED
    customer = await register_customer(api)
    token = await mailed_token(system, customer.email)
    await expire_mailed_tokens(system, customer.user_id)
    expired = await api.get(VERIFY, params={"token": token})
    assert expired.status_code == 400
    assert expired.json() == {"detail": "Verification token has expired. Please request a new one."}


async def test_resend_supersedes_the_older_link(api: httpx.AsyncClient, system: System) -> None:
    customer = await register_customer(api)
    first = await mailed_token(system, customer.email)
    response = await api.post(RESEND, json={"email": customer.email.upper()})
    assert response.status_code == 200 and response.json() == RESEND_MESSAGE
    second = await mailed_token(system, customer.email, count=2)
    assert first != second
    assert (await api.get(VERIFY, params={"token": first})).json() == USED
    assert (await api.get(VERIFY, params={"token": second})).status_code == 200


async def test_resend_says_the_same_for_anyone_and_mails_only_the_unverified(
    api: httpx.AsyncClient, system: System
) -> None:
    nobody = f"{unique()}@example.com"
    active = await active_customer(api, await admin_token(api))
    for email in (nobody, active.email):
        response = await api.post(RESEND, json={"email": email})
        assert response.status_code == 200 and response.json() == RESEND_MESSAGE
    await asyncio.sleep(1.5)
    # Only the registration mail: an active account gets no new link.
    assert system.mails(nobody) == [] and len(system.mails(active.email)) == 1
    invalid = await api.post(RESEND, json={"email": "not-an-email"})
    assert invalid.status_code == 422


async def test_banned_before_following_the_link(api: httpx.AsyncClient, system: System) -> None:
    admin = await admin_token(api)
    customer = await register_customer(api)
    token = await mailed_token(system, customer.email)
    ban = await api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    assert ban.status_code == 200
    response = await api.get(VERIFY, params={"token": token})
    assert response.status_code == 403 and response.json() == {"detail": "Account banned"}
    # The email stays verified: unbanning makes the customer active, not unverified.
    await api.post(f"/api/auth/unban-user/{customer.user_id}", headers=bearer(admin))
    details = await api.get(f"/api/auth/users/{customer.user_id}", headers=bearer(admin))
    assert details.json()["account_state"] == "active"


async def test_password_reset_by_mail(api: httpx.AsyncClient, system: System) -> None:
    customer = await active_customer(api, await admin_token(api))
    response = await api.post(REQUEST_RESET, json={"email": customer.email})
    assert response.status_code == 200 and response.json() == RESET_MESSAGE
    token = await mailed_token(system, customer.email, subject=RESET_SUBJECT)
    [mail] = [m for m in system.mails(customer.email) if m["Subject"] == RESET_SUBJECT]
    assert f"http://127.0.0.1:8080/reset-password?token={token}" in mail_text(mail)
    new_password = "BrandNew123"
    reset = await api.post(RESET, json={"token": token, "new_password": new_password})
    assert reset.status_code == 200
    assert reset.json() == {"message": "Password has been reset successfully"}
    assert (await login(api, customer.email, customer.password)).status_code == 401
    assert (await login(api, customer.email, new_password)).status_code == 200
    old = await api.get("/api/user/me", headers=customer.headers)
    assert old.status_code == 401 and old.json() == {"detail": "Token has been revoked"}
    refresh = await api.post("/api/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert refresh.status_code == 401
    reuse = await api.post(RESET, json={"token": token, "new_password": "Another123"})
    assert reuse.status_code == 400 and reuse.json() == BAD_RESET


async def test_reset_request_for_an_unknown_email_looks_the_same(
    api: httpx.AsyncClient, system: System
) -> None:
    nobody = f"{unique()}@example.com"
    response = await api.post(REQUEST_RESET, json={"email": nobody})
    assert response.status_code == 200 and response.json() == RESET_MESSAGE
    await asyncio.sleep(1.5)
    assert system.mails(nobody) == []
    assert (await api.post(REQUEST_RESET, json={"email": "@bad"})).status_code == 422


async def test_reset_token_is_superseded_and_expires(
    api: httpx.AsyncClient, system: System
) -> None:
    customer = await active_customer(api, await admin_token(api))
    await api.post(REQUEST_RESET, json={"email": customer.email})
    await api.post(REQUEST_RESET, json={"email": customer.email})
    first = await mailed_token(system, customer.email, count=1, subject=RESET_SUBJECT)
    second = await mailed_token(system, customer.email, count=2, subject=RESET_SUBJECT)
    superseded = await api.post(RESET, json={"token": first, "new_password": "Another123"})
    assert superseded.status_code == 400 and superseded.json() == BAD_RESET
    await expire_mailed_tokens(system, customer.user_id)
    expired = await api.post(RESET, json={"token": second, "new_password": "Another123"})
    assert expired.status_code == 400 and expired.json() == BAD_RESET
    assert (await login(api, customer.email, customer.password)).status_code == 200


async def test_reset_checks_the_password_rules_before_the_token(api: httpx.AsyncClient) -> None:
    response = await api.post(RESET, json={"token": "unknown", "new_password": "short"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "new_password"]
    unknown = await api.post(RESET, json={"token": "unknown", "new_password": "Valid1234"})
    assert unknown.status_code == 400 and unknown.json() == BAD_RESET


async def test_reset_keeps_the_account_state(api: httpx.AsyncClient, system: System) -> None:
    customer = await register_customer(api)
    await api.post(REQUEST_RESET, json={"email": customer.email})
    token = await mailed_token(system, customer.email, subject=RESET_SUBJECT)
    assert (
        await api.post(RESET, json={"token": token, "new_password": "Fresh1234"})
    ).status_code == 200
    still = await login(api, customer.email, "Fresh1234")
    assert still.status_code == 403 and still.json() == {"detail": "Email not verified"}


async def test_change_password_revokes_older_tokens_and_issues_new_ones(
    api: httpx.AsyncClient,
) -> None:
    customer = await active_customer(api, await admin_token(api))
    response = await api.post(
        CHANGE,
        json={"current_password": customer.password, "new_password": "Changed123"},
        headers=customer.headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Password changed successfully"
    # Issued in the same second as the change, still valid.
    assert (await api.get("/api/user/me", headers=bearer(body["token"]))).status_code == 200
    old = await api.get("/api/user/me", headers=customer.headers)
    assert old.status_code == 401 and old.json() == {"detail": "Token has been revoked"}
    old_refresh = await api.post(
        "/api/auth/refresh", json={"refresh_token": customer.refresh_token}
    )
    assert old_refresh.status_code == 401
    new_refresh = await api.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert new_refresh.status_code == 200
    assert (await login(api, customer.email, "Changed123")).status_code == 200
    assert (await login(api, customer.email, customer.password)).status_code == 401


async def test_change_password_errors(api: httpx.AsyncClient) -> None:
    customer = await active_customer(api, await admin_token(api))
    anonymous = await api.post(CHANGE, json={})
    assert anonymous.status_code == 401 and anonymous.json() == {"detail": "Not authenticated"}
    weak = await api.post(
        CHANGE,
        json={"current_password": "wrong", "new_password": "nodigits"},
        headers=customer.headers,
    )
    assert weak.status_code == 422
    wrong = await api.post(
        CHANGE,
        json={"current_password": "Wrong1234", "new_password": "Changed123"},
        headers=customer.headers,
    )
    assert wrong.status_code == 400 and wrong.json() == {"detail": "Current password is incorrect"}
    assert (await api.get("/api/user/me", headers=customer.headers)).status_code == 200


async def test_activation_by_email_helper_gives_a_working_token(
    api: httpx.AsyncClient, system: System
) -> None:
    customer = await activate_by_email(api, system, await register_customer(api))
    await sign_in(api, customer)
    assert customer.password == PASSWORD and customer.refresh_token


async def test_an_email_link_followed_while_an_admin_approves_is_answered_not_deadlocked(
    api: httpx.AsyncClient, system: System
) -> None:
    """The link locks the account before its token, as the approval does (which supersedes the
    link): taken the other way round the two deadlock and one answers 500."""
    admin = await admin_token(api)
    customer = await register_customer(api)
    token = await mailed_token(system, customer.email)
    locked = "SELECT 1 FROM auth.users WHERE user_id = $1 FOR UPDATE"
    async with holding(system, locked, customer.user_id):
        approving = asyncio.create_task(
            api.post(f"/api/auth/approve-user/{customer.user_id}", headers=bearer(admin))
        )
        await waiting_for_lock(system, "%auth.users%", approving)
        following = asyncio.create_task(api.get(VERIFY, params={"token": token}))
        await waiting_for_lock(system, "%auth.users%", following, waiters=2)
    approved, followed = await approving, await following
    assert approved.status_code == 200, approved.text
    assert (followed.status_code, followed.json()) == (400, USED)
    assert (await login(api, customer.email, customer.password)).status_code == 200
