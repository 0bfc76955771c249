"""Tokens at the edge (API.md §2.4): forged tokens, bans and revocations through the gateway.

This module runs its own system whose auth signs with a key the test knows
(`JWT_PRIVATE_KEY`), so attack tokens can be built with every claim right but one. Resale is
stopped in it: a request to a resale path that gets past the gateway answers 503, so a 401 or
403 there can only come from the gateway itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.keys import key_id, to_pem
from tests.support.actors import (
    ADMIN_EMAIL,
    RESET_SUBJECT,
    active_customer,
    admin_token,
    bearer,
    claims,
    mailed_token,
    sign_in,
)
from tests.support.shop import eventually, holding
from tests.support.system import System

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY)
EDGE_ONLY = "/api/resale/marketplace"  # resale is down: only the gateway answers 401/403
INVALID = "Could not validate credentials"


@pytest.fixture(scope="module")
def edge() -> Iterator[System]:
    system = System(extra_env={"JWT_PRIVATE_KEY": to_pem(KEY)})
    try:
        system.start()
        system.stop_app("resale")
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
async def client(edge: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.gateway_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
async def admin(client: httpx.AsyncClient) -> str:
    return await admin_token(client)


def good_claims(admin: str, **changes: Any) -> dict[str, Any]:
    """The claims of a real admin token, freshly issued; `changes` set (None = drop) claims."""
    now = time.time()
    base = {**claims(admin), "iat": now, "exp": int(now) + 600, "jti": str(uuid.uuid4())}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = KEY, kid: str = KID) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """The classic confusion attack: HMAC keyed with the published public key."""
    public = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = unsigned({"alg": "HS256", "typ": "JWT", "kid": KID}, payload)
    signature = hmac.new(public, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(signature)}"


async def assert_refused(
    client: httpx.AsyncClient, token_or_header: str, detail: str, raw_header: bool = False
) -> None:
    header = token_or_header if raw_header else f"Bearer {token_or_header}"
    for path in ("/api/user/me", EDGE_ONLY):
        response = await client.get(path, headers={"Authorization": header})
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"detail": detail}, path
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_token_with_every_claim_right_passes(client: httpx.AsyncClient, admin: str) -> None:
    token = signed(good_claims(admin))
    me = await client.get("/api/user/me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["email"] == ADMIN_EMAIL
    assert (await client.get(EDGE_ONLY, headers=bearer(token))).status_code == 503


async def test_forged_and_broken_tokens_are_refused_at_the_edge(
    client: httpx.AsyncClient, admin: str
) -> None:
    payload = good_claims(admin)
    stranger = Ed25519PrivateKey.generate()
    attacks = {
        "alg none": unsigned({"alg": "none", "typ": "JWT", "kid": KID}, payload) + ".",
        "HS256 keyed with the public key": hs256_with_public_key(payload),
        "missing exp": signed(good_claims(admin, exp=None)),
        "missing jti": signed(good_claims(admin, jti=None)),
        "missing iat": signed(good_claims(admin, iat=None)),
        "wrong aud": signed(good_claims(admin, aud="someone-else")),
        "wrong iss": signed(good_claims(admin, iss="evil-auth")),
        "unknown kid": signed(payload, stranger, key_id(stranger)),
        "known kid, other key": signed(payload, stranger, KID),
        "no kid": jwt.encode(payload, KEY, algorithm="EdDSA"),
        "refresh token": secrets.token_urlsafe(32),
        "garbage": "garbage",
        "three dots of garbage": "a.b.c",
    }
    for name, token in attacks.items():
        try:
            await assert_refused(client, token, INVALID)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


async def test_an_expired_token_says_so(client: httpx.AsyncClient, admin: str) -> None:
    past = time.time() - 7200
    token = signed(good_claims(admin, iat=past, exp=int(past) + 1800))
    await assert_refused(client, token, "Token has expired")


async def test_a_token_a_minute_past_its_expiry_has_expired(
    client: httpx.AsyncClient, admin: str
) -> None:
    """§2.4: at most 30 s of leeway, so a minute past `exp` is past it at the edge."""
    now = time.time()
    token = signed(good_claims(admin, iat=now - 600, exp=int(now) - 60))
    await assert_refused(client, token, "Token has expired")


async def test_a_real_refresh_token_is_no_access_token(
    client: httpx.AsyncClient, admin: str
) -> None:
    customer = await active_customer(client, admin)
    await assert_refused(client, customer.refresh_token, INVALID)


async def test_an_authorization_header_that_is_not_bearer(client: httpx.AsyncClient) -> None:
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Token abc", "bearer-token"):
        await assert_refused(client, header, "Not authenticated", raw_header=True)


async def test_two_authorization_headers_are_refused_at_the_edge_and_in_a_service(
    client: httpx.AsyncClient, edge: System, admin: str
) -> None:
    """A logged-out token first, a valid one second: the gateway read the last and a service
    the first, so the revoked one was used past the gateway's checks. Two headers are now
    no credentials at every hop, whatever their order."""
    revoked, valid = await active_customer(client, admin), await active_customer(client, admin)
    assert (await client.post("/api/auth/logout", headers=revoked.headers)).status_code == 200
    one = revoked.headers["Authorization"], valid.headers["Authorization"]
    for pair in (one, one[::-1], (one[1], one[1])):
        headers = [("Authorization", pair[0]), ("Authorization", pair[1])]
        response = await client.get(EDGE_ONLY, headers=headers)
        assert (response.status_code, response.json()) == (401, {"detail": "Not authenticated"})
        async with httpx.AsyncClient(base_url=edge.url("ordering"), timeout=10) as ordering:
            direct = await ordering.get("/api/cart/items", headers=headers)
            assert (direct.status_code, direct.json()) == (401, {"detail": "Not authenticated"})
            alone = await ordering.get("/api/cart/items", headers=valid.headers)
            assert (alone.status_code, alone.json()) == (200, [])
    assert (await client.get(EDGE_ONLY, headers=valid.headers)).status_code == 503


async def test_public_auth_endpoints_ignore_a_bad_token(client: httpx.AsyncClient) -> None:
    garbage = {"Authorization": "Bearer garbage"}
    jwks = await client.get("/api/auth/.well-known/jwks.json", headers=garbage)
    assert jwks.status_code == 200
    logout = await client.post("/api/auth/logout", headers=garbage)
    assert logout.status_code == 200 and logout.json() == {"message": "Logout successful"}


async def ban_directly(edge: System, admin: str, user_id: int, action: str = "ban") -> None:
    """Ban (or unban) on auth itself, so only auth's event can tell the gateway."""
    async with httpx.AsyncClient(base_url=edge.url("auth"), timeout=10) as auth:
        response = await auth.post(f"/api/auth/{action}-user/{user_id}", headers=bearer(admin))
        assert response.status_code == 200, response.text


async def test_a_ban_refuses_existing_tokens_within_one_second(
    client: httpx.AsyncClient, edge: System, admin: str
) -> None:
    customer = await active_customer(client, admin)
    assert (await client.get(EDGE_ONLY, headers=customer.headers)).status_code == 503
    await ban_directly(edge, admin, customer.user_id)
    banned_at = time.monotonic()
    while True:
        response = await client.get(EDGE_ONLY, headers=customer.headers)
        if response.status_code == 403:
            break
        assert time.monotonic() - banned_at < 1.0, "the gateway still lets the banned user in"
        await asyncio.sleep(0.02)
    assert response.json() == {"detail": "Account banned"}


async def test_a_ban_through_this_gateway_applies_before_the_event(
    client: httpx.AsyncClient, admin: str
) -> None:
    customer = await active_customer(client, admin)
    ban = await client.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
    assert ban.status_code == 200, ban.text
    # No waiting at all: the very next request is refused.
    response = await client.get(EDGE_ONLY, headers=customer.headers)
    assert response.status_code == 403 and response.json() == {"detail": "Account banned"}
    unban = await client.post(f"/api/auth/unban-user/{customer.user_id}", headers=bearer(admin))
    assert unban.status_code == 200, unban.text
    # Unbanned, but the token from before the ban stays invalid; a new login works.
    old = await client.get(EDGE_ONLY, headers=customer.headers)
    assert old.status_code == 401 and old.json() == {"detail": "Token has been revoked"}
    await sign_in(client, customer)
    assert (await client.get(EDGE_ONLY, headers=customer.headers)).status_code == 503


async def test_logout_and_password_changes_revoke_older_tokens_at_once(
    client: httpx.AsyncClient, admin: str, edge: System
) -> None:
    """No waiting: the very next request through this gateway refuses what the write revoked
    (API.md §1.8), before auth's event arrives; the token a change of password gives works."""
    revoked = {"detail": "Token has been revoked"}
    customer = await active_customer(client, admin)
    out = await client.post("/api/auth/logout", headers=customer.headers)
    assert out.status_code == 200
    after = await client.get(EDGE_ONLY, headers=customer.headers)
    assert (after.status_code, after.json()) == (401, revoked)

    other = await active_customer(client, admin)
    changed = await client.post(
        "/api/user/change-password",
        json={"current_password": other.password, "new_password": "Another123!"},
        headers=other.headers,
    )
    assert changed.status_code == 200, changed.text
    after = await client.get(EDGE_ONLY, headers=other.headers)
    assert (after.status_code, after.json()) == (401, revoked)
    fresh = changed.json()["token"]
    assert (await client.get(EDGE_ONLY, headers=bearer(fresh))).status_code == 503

    forgetful = await active_customer(client, admin)
    asked = await client.post("/api/auth/request-password-reset", json={"email": forgetful.email})
    assert asked.status_code == 200
    token = await mailed_token(edge, forgetful.email, subject=RESET_SUBJECT)
    reset = await client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "BrandNew123"}
    )
    assert reset.status_code == 200, reset.text
    after = await client.get(EDGE_ONLY, headers=forgetful.headers)
    assert (after.status_code, after.json()) == (401, revoked)


def drop_broker_connection(pid: int) -> None:
    """Have RabbitMQ close the AMQP connection of one process (ours), as a network fault would;
    its exclusive queue goes with it, so events published meanwhile never reach it."""
    sockets = subprocess.run(
        ["ss", "-tnpH", "state", "established", "( dport = :5672 )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ports = [line.split()[2].rsplit(":", 1)[1] for line in sockets if f"pid={pid}," in line]
    assert ports, "the gateway has no broker connection"
    connections = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    closing = [line.split()[0] for line in connections if line.split()[-1:] in [[p] for p in ports]]
    assert closing, connections
    for connection in closing:
        subprocess.run(
            ["rabbitmqctl", "close_connection", connection, "test"],
            capture_output=True,
            check=True,
            timeout=30,
        )


async def test_after_a_broker_reconnect_the_deny_list_is_reloaded(
    client: httpx.AsyncClient, edge: System, admin: str
) -> None:
    customer = await active_customer(client, admin)
    drop_broker_connection(edge.processes["gateway"].pid)
    await ban_directly(edge, admin, customer.user_id)  # the event finds no gateway queue
    deadline = time.monotonic() + 20  # the broker client reconnects after about 5 s
    while (await client.get(EDGE_ONLY, headers=customer.headers)).status_code != 403:
        assert time.monotonic() < deadline, "the ban was never learnt after the reconnect"
        await asyncio.sleep(0.1)


async def test_a_restarted_gateway_remembers_bans_and_revocations(
    client: httpx.AsyncClient, edge: System, admin: str
) -> None:
    banned = await active_customer(client, admin)
    await ban_directly(edge, admin, banned.user_id)
    logged_out = await active_customer(client, admin)
    async with httpx.AsyncClient(base_url=edge.url("auth"), timeout=10) as auth:
        assert (await auth.post("/api/auth/logout", headers=logged_out.headers)).status_code == 200
    edge.stop_app("gateway")
    edge.start_app("gateway")  # learns both from auth's deny-list snapshot, not from events
    async with httpx.AsyncClient(base_url=edge.gateway_url, timeout=10) as fresh:
        response = await fresh.get(EDGE_ONLY, headers=banned.headers)
        assert response.status_code == 403 and response.json() == {"detail": "Account banned"}
        response = await fresh.get(EDGE_ONLY, headers=logged_out.headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "Token has been revoked"}


async def test_a_gateway_that_could_not_read_the_deny_list_lets_no_token_through(
    client: httpx.AsyncClient, edge: System, admin: str
) -> None:
    """Restarted while auth cannot answer its deny-list (one of its tables locked; the keys
    still verify tokens): a banned user's token, which only the deny-list refuses on a route
    whose service does not look (the cart), is a 503 rather than let through, and is refused
    as banned once the deny-list is read."""
    banned = await active_customer(client, admin)
    await ban_directly(edge, admin, banned.user_id)
    async with holding(edge, "LOCK TABLE auth.revoked_access_tokens IN ACCESS EXCLUSIVE MODE"):
        await asyncio.to_thread(edge.stop_app, "gateway")
        await asyncio.to_thread(edge.start_app, "gateway")  # after its wait for the deny-list
        async with httpx.AsyncClient(base_url=edge.gateway_url, timeout=10) as fresh:
            blind = await fresh.get("/api/cart/items", headers=banned.headers)
            assert (blind.status_code, blind.json()) == (503, {"detail": "Service unavailable"})
    async with httpx.AsyncClient(base_url=edge.gateway_url, timeout=10) as fresh:

        async def refused_as_banned() -> bool:
            response = await fresh.get("/api/cart/items", headers=banned.headers)
            return (response.status_code, response.json()) == (403, {"detail": "Account banned"})

        assert await eventually(refused_as_banned, timeout=15)


async def test_a_stopped_service_is_a_fast_json_503(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.get(EDGE_ONLY)
    assert response.status_code == 503 and response.json() == {"detail": "Service unavailable"}
    assert time.monotonic() - started < 1.0
    assert response.headers["x-request-id"]
