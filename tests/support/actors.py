"""Shared test helpers: the people of the marketplace, made through the public API.

Every helper goes through the gateway (`api`, an httpx.AsyncClient on it) like a real client,
with random identifiers so tests never collide. Typical use:

    admin = await admin_token(api)
    buyer = await active_customer(api, admin)           # customer, activated, signed in
    seller = await verified_organizer(api, admin)       # organizer approved by an admin
    headers = bearer(buyer.token)
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import httpx
import jwt

from services.auth.config import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, DEV_ADMIN_SECRET_KEY
from tests.support.system import System

ADMIN_EMAIL = DEV_ADMIN_EMAIL
ADMIN_PASSWORD = DEV_ADMIN_PASSWORD
ADMIN_SECRET_KEY = DEV_ADMIN_SECRET_KEY
PASSWORD = "Secret123!"


@dataclass
class Account:
    """A registered user as a test knows them; `token` is set once signed in."""

    email: str
    password: str
    login: str
    first_name: str
    last_name: str
    user_id: int = 0
    role_id: int = 0
    token: str = ""
    refresh_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """The claims of an access token, read without checking it (tests only)."""
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def new_account_fields(**overrides: Any) -> dict[str, Any]:
    """A valid registration body with a fresh email and login."""
    tag = unique()
    body = {
        "email": f"{tag}@example.com",
        "login": tag,
        "password": PASSWORD,
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    return {**body, **overrides}


def _account(body: dict[str, Any]) -> Account:
    return Account(
        body["email"], body["password"], body["login"], body["first_name"], body["last_name"]
    )


async def login(api: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    """POST /api/auth/token with the form body real clients send."""
    return await api.post("/api/auth/token", data={"username": email, "password": password})


async def sign_in(api: httpx.AsyncClient, account: Account) -> Account:
    """Log in and keep the access and refresh tokens on the account."""
    response = await login(api, account.email, account.password)
    assert response.status_code == 200, response.text
    account.token = response.json()["token"]
    account.refresh_token = response.json()["refresh_token"]
    return account


async def admin_token(api: httpx.AsyncClient) -> str:
    """An access token of the development initial administrator."""
    response = await login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def me(api: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await api.get("/api/user/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def register_customer(api: httpx.AsyncClient, **overrides: Any) -> Account:
    """A new customer, still `unverified` (no token yet)."""
    body = new_account_fields(**overrides)
    response = await api.post("/api/auth/register/customer", json=body)
    assert response.status_code == 201, response.text
    account = _account(body)
    account.user_id = response.json()["user_id"]
    return account


def mail_text(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else str(message.get_payload())


def token_in(message: Message) -> str:
    """The `token=` value of the link in a verification or reset email."""
    found = re.search(r"[?&]token=([A-Za-z0-9_\-]+)", mail_text(message))
    assert found, mail_text(message)
    return found.group(1)


VERIFICATION_SUBJECT = "Activate your Resellio account"
RESET_SUBJECT = "Reset your Resellio password"


async def mailed_token(
    system: System, email: str, count: int = 1, subject: str = VERIFICATION_SUBJECT
) -> str:
    """The token in the `count`-th email with `subject` sent to `email` (waits for it)."""
    wanted: list[Message] = []
    for _ in range(100):
        messages = await system.wait_for_mail(email, count=count)
        wanted = [m for m in messages if m["Subject"] == subject]
        if len(wanted) >= count:
            return token_in(wanted[count - 1])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no mail #{count} '{subject}' for {email}")


async def activate_by_email(api: httpx.AsyncClient, system: System, account: Account) -> Account:
    """Follow the emailed verification link; keeps the access token it answers with."""
    token = await mailed_token(system, account.email)
    response = await api.get("/api/auth/verify-email", params={"token": token})
    assert response.status_code == 200, response.text
    account.token = response.json()["token"]
    return account


async def activate_by_admin(api: httpx.AsyncClient, admin: str, account: Account) -> Account:
    """An administrator approves the customer (no mail needed)."""
    response = await api.post(f"/api/auth/approve-user/{account.user_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text
    account.token = response.json()["token"]
    return account


async def active_customer(api: httpx.AsyncClient, admin: str, **overrides: Any) -> Account:
    """A customer activated by `admin` and signed in (access + refresh token)."""
    account = await register_customer(api, **overrides)
    await activate_by_admin(api, admin, account)
    await sign_in(api, account)
    account.role_id = claims(account.token)["role_id"]
    return account


async def register_organizer(api: httpx.AsyncClient, **overrides: Any) -> Account:
    """A new organizer awaiting verification, holding the token registration answers with."""
    body = new_account_fields(company_name=f"Company {unique()}", **overrides)
    response = await api.post("/api/auth/register/organizer", json=body)
    assert response.status_code == 201, response.text
    account = _account(body)
    account.token = response.json()["token"]
    details = await me(api, account.token)
    account.user_id, account.role_id = details["user_id"], details["organizer_id"]
    account.extra["company_name"] = body["company_name"]
    return account


async def verified_organizer(api: httpx.AsyncClient, admin: str, **overrides: Any) -> Account:
    """An organizer approved by `admin`, signed in again so the token says `verified`."""
    account = await register_organizer(api, **overrides)
    response = await api.post(
        "/api/auth/verify-organizer",
        json={"organizer_id": account.role_id, "approve": True},
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    return await sign_in(api, account)
