"""Access-token verification (API.md §2.4): EdDSA only, key by `kid` from auth's JWKS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import msgspec

from services.kernel.errors import ServiceUnavailable, Unauthorized

log = logging.getLogger("resellio.tokens")
ALGORITHM = "EdDSA"
LEEWAY_S = 30
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]


class Identity(msgspec.Struct, frozen=True):
    sub: str
    role: str
    user_id: int
    role_id: int
    name: str
    jti: str
    iat: float
    exp: int
    # Organizer tokens issued after an administrator verified the organizer carry True.
    verified: bool = False


INVALID = "Could not validate credentials"
# After auth's keys could not be fetched, no new attempt for this long: while auth is down,
# requests do not queue one behind another for a fetch each.
RETRY_AFTER_FAILURE_S = 2.0


class KeysUnavailable(ServiceUnavailable):
    """Auth's keys could not be fetched, and the token's key is not among those known: it
    cannot be told valid or not (503)."""


class TokenVerifier:
    """Verifies tokens against a JWKS source; refreshes it when an unknown `kid` appears."""

    def __init__(
        self,
        jwks_source: Callable[[], Awaitable[dict[str, Any]]],
        issuer: str,
        audience: str,
        refresh_every_s: float = 300.0,
    ) -> None:
        self._source = jwks_source
        self.issuer = issuer
        self.audience = audience
        self._refresh_every = refresh_every_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._failed_at = -RETRY_AFTER_FAILURE_S
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[str, Identity] = OrderedDict()

    async def _refresh(self, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            # An unknown kid forces a refetch, but at most once a second (no amplification).
            if self._keys and now - self._fetched_at < (1.0 if force else self._refresh_every):
                return
            if now - self._failed_at < RETRY_AFTER_FAILURE_S:
                raise KeysUnavailable()
            try:
                document = await self._source()
            except Exception as exc:
                self._failed_at = time.monotonic()
                log.warning("auth's keys not fetched: %r", exc)
                raise KeysUnavailable() from exc
            keys = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            self._keys = keys
            self._fetched_at = now

    async def _key(self, kid: str) -> Any:
        if time.monotonic() - self._fetched_at > self._refresh_every and not (
            kid in self._keys and self._lock.locked()  # one refresh at a time; none awaited
        ):
            try:
                await self._refresh(force=False)
            except KeysUnavailable:
                if kid not in self._keys:
                    raise
                # Auth is away: a key it published still verifies its tokens (a rotation
                # publishes the new key beside the old); fetched again once auth answers.
        if kid not in self._keys:
            await self._refresh(force=True)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(INVALID)
        return key

    async def verify(self, token: str) -> Identity:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp + LEEWAY_S > time.time():
                return cached
            del self._cache[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(INVALID) from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise Unauthorized(INVALID)
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token has expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(INVALID) from exc
        try:
            identity = msgspec.convert(
                {k: claims.get(k) for k in Identity.__struct_fields__ if k in claims}, Identity
            )
        except msgspec.ValidationError as exc:
            raise Unauthorized(INVALID) from exc
        if identity.role not in ("customer", "organizer", "administrator"):
            raise Unauthorized(INVALID)
        self._cache[token] = identity
        if len(self._cache) > 50_000:
            self._cache.popitem(last=False)
        return identity


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
