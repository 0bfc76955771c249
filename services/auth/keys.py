"""The Ed25519 signing keys that only auth holds, and the JWKS it publishes."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from contracts.timeutil import utcnow
from services.auth.models import signing_keys
from services.kernel.db import Database


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PrivateKey) -> str:
    return _b64url(hashlib.sha256(_raw_public(key.public_key())).digest()[:12])


def load_pem(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("JWT_PRIVATE_KEY must be an Ed25519 private key (PEM, PKCS#8)")
    return key


def to_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class KeyRing:
    current_kid: str
    current: Ed25519PrivateKey
    published: dict[str, Ed25519PublicKey]

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(_raw_public(pub)),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
                for kid, pub in self.published.items()
            ]
        }


def _public_from_b64(value: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(
        base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    )


async def load_keyring(db: Database, configured_pem: str | None, max_token_minutes: int) -> KeyRing:
    """The configured key (production) or the shared development key kept in auth's schema.

    Every key is recorded (public part; the private part only for the development key) so
    that every auth instance signs with the same key and a replaced key stays published until
    the tokens signed with it have expired.
    """
    async with db.unit_of_work() as uow:
        # Instances starting together must agree on one development key.
        await uow.execute(text("SELECT pg_advisory_xact_lock(hashtext('auth:signing-key'))"))
        if configured_pem:
            current = load_pem(configured_pem)
        else:
            existing = await uow.conn.scalar(
                select(signing_keys.c.private_pem)
                .where(signing_keys.c.retired_at.is_(None), signing_keys.c.private_pem.is_not(None))
                .order_by(signing_keys.c.created_at)
                .limit(1)
            )
            current = load_pem(existing) if existing else Ed25519PrivateKey.generate()
        kid = key_id(current)
        await uow.execute(
            insert(signing_keys)
            .values(
                kid=kid,
                public_key=_b64url(_raw_public(current.public_key())),
                private_pem=None if configured_pem else to_pem(current),
            )
            .on_conflict_do_update(index_elements=[signing_keys.c.kid], set_={"retired_at": None})
        )
        await uow.execute(
            signing_keys.update()
            .where(signing_keys.c.kid != kid, signing_keys.c.retired_at.is_(None))
            .values(retired_at=utcnow())
        )
        cutoff = utcnow() - timedelta(minutes=max_token_minutes)
        rows = (
            await uow.execute(
                select(signing_keys.c.kid, signing_keys.c.public_key).where(
                    (signing_keys.c.retired_at.is_(None)) | (signing_keys.c.retired_at > cutoff)
                )
            )
        ).all()
        await uow.commit()
    published = {row.kid: _public_from_b64(row.public_key) for row in rows}
    return KeyRing(kid, current, published)
