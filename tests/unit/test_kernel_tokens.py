"""Token verification while auth's keys cannot be fetched (services/kernel/tokens.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.keys import KeyRing, key_id
from services.kernel.errors import ServiceUnavailable, Unauthorized
from services.kernel.tokens import TokenVerifier

KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY)
JWKS = KeyRing(KID, KEY, {KID: KEY.public_key()}).jwks()


def token(kid: str = KID, key: Ed25519PrivateKey = KEY) -> str:
    now = time.time()
    claims = {
        "sub": "ann@example.com",
        "role": "customer",
        "user_id": 1,
        "role_id": 1,
        "name": "Ann",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": int(now) + 600,
        "iss": "resellio-auth",
        "aud": "resellio-api",
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


class Auth:
    """The JWKS source: answers, or is down (counting the attempts)."""

    def __init__(self) -> None:
        self.down = False
        self.asked = 0

    async def __call__(self) -> dict[str, Any]:
        self.asked += 1
        if self.down:
            raise ConnectionRefusedError("auth is down")
        return JWKS


async def test_auth_down_past_the_refresh_keeps_the_known_keys_and_asks_seldom() -> None:
    """Auth away longer than the keys' refresh period: a token signed with a key it published
    is still verified (a 503, or a 500 in a service, before); one with a key never seen is a
    503, not a 401 (it may be valid); and the requests meanwhile do not each try auth."""
    auth = Auth()
    verifier = TokenVerifier(auth, "resellio-auth", "resellio-api", refresh_every_s=0.05)
    assert (await verifier.verify(token())).user_id == 1
    auth.down = True
    await asyncio.sleep(0.06)
    for _ in range(20):
        assert (await verifier.verify(token())).user_id == 1
    assert auth.asked == 2  # the first fetch, one failed refresh: then a pause
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(token(kid=key_id(other), key=other))
    auth.down = False
    await asyncio.sleep(2.1)  # past the pause after a failure: auth is asked again
    with pytest.raises(Unauthorized):  # now known not to be one of auth's keys
        await verifier.verify(token(kid=key_id(other), key=other))
    assert (await verifier.verify(token())).user_id == 1
