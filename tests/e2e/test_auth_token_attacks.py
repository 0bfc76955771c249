"""Forged and broken access tokens (API.md §2.4) are refused with 401 by auth's own [U]
endpoints, and by the gateway in front of them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.actors import active_customer, admin_token, claims
from tests.support.auth_db import auth_sql
from tests.support.system import System

INVALID = {"detail": "Could not validate credentials"}


@pytest.fixture(params=["gateway", "auth"])
async def client(
    request: pytest.FixtureRequest, system: System
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url(request.param), timeout=30) as http:
        yield http


async def signing_key(system: System) -> tuple[str, Any]:
    """The development signing key kept in auth's schema: (kid, private key)."""
    from services.auth.keys import load_pem

    [(kid, pem)] = await auth_sql(
        system,
        "SELECT kid, private_pem FROM auth.signing_keys WHERE retired_at IS NULL"
        " AND private_pem IS NOT NULL",
    )
    return kid, load_pem(pem)


def good_claims(user: dict[str, Any], **changes: Any) -> dict[str, Any]:
    now = time.time()
    base = {
        "sub": user["sub"],
        "role": user["role"],
        "user_id": user["user_id"],
        "role_id": user["role_id"],
        "name": user["name"],
        "iat": round(now, 3),
        "exp": int(now) + 600,
        "iss": "resellio-auth",
        "aud": "resellio-api",
        "jti": str(uuid.uuid4()),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def tampered(token: str, **changes: Any) -> str:
    """The token with its payload changed and the original signature kept."""
    head, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps({**claims(token), **changes}).encode())
    return f"{head}.{payload.decode().rstrip('=')}.{signature}"


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/user/me", headers={"Authorization": f"Bearer {token}"})


async def test_forged_tokens_are_refused(
    client: httpx.AsyncClient, api: httpx.AsyncClient, system: System
) -> None:
    customer = await active_customer(api, await admin_token(api))
    user = claims(customer.token)
    kid, key = await signing_key(system)
    header = {"kid": kid}
    jwks = (await api.get("/api/auth/.well-known/jwks.json")).json()["keys"][0]

    def signed(**changes: Any) -> str:
        return jwt.encode(good_claims(user, **changes), key, algorithm="EdDSA", headers=header)

    assert (await me(client, signed())).status_code == 200  # the forge kit itself works
    forged = {
        "alg none": jwt.encode(good_claims(user), None, algorithm="none", headers=header),
        "HS256 with the public key": jwt.encode(
            good_claims(user), jwks["x"], algorithm="HS256", headers=header
        ),
        "missing exp": signed(exp=None),
        "missing jti": signed(jti=None),
        "wrong audience": signed(aud="someone-else"),
        "wrong issuer": signed(iss="evil"),
        "unknown kid": jwt.encode(
            good_claims(user), key, algorithm="EdDSA", headers={"kid": "unknown-kid"}
        ),
        "tampered payload": tampered(customer.token, role="administrator"),
        "refresh token": customer.refresh_token,
        "garbage": "not-a-token",
    }
    for name, token in forged.items():
        response = await me(client, token)
        assert response.status_code == 401, name
        assert response.json() == INVALID, name
        assert response.headers["www-authenticate"] == "Bearer", name


async def test_expired_token_says_so(
    client: httpx.AsyncClient, api: httpx.AsyncClient, system: System
) -> None:
    customer = await active_customer(api, await admin_token(api))
    kid, key = await signing_key(system)
    past = time.time() - 3600
    token = jwt.encode(
        good_claims(claims(customer.token), iat=past, exp=int(past) + 60),
        key,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    response = await me(client, token)
    assert response.status_code == 401 and response.json() == {"detail": "Token has expired"}


async def test_a_token_a_minute_past_its_expiry_has_expired(
    client: httpx.AsyncClient, api: httpx.AsyncClient, system: System
) -> None:
    """§2.4: at most 30 s of leeway, so a minute past `exp` is past it."""
    customer = await active_customer(api, await admin_token(api))
    kid, key = await signing_key(system)
    now = time.time()
    token = jwt.encode(
        good_claims(claims(customer.token), iat=round(now - 600, 3), exp=int(now) - 60),
        key,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    response = await me(client, token)
    assert (response.status_code, response.json()) == (401, {"detail": "Token has expired"})
    assert response.headers["www-authenticate"] == "Bearer"


async def test_no_or_non_bearer_authorization(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await client.get("/api/user/me", headers=headers)
        assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}
        assert response.headers["www-authenticate"] == "Bearer"
