"""Access tokens (API.md §2.4), rotating refresh tokens (§2.5) and emailed single-use tokens.

Opaque tokens are 256 random bits; only their SHA-256 is stored, so a database leak gives
nobody a usable token.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import Table, select, update

from contracts.timeutil import utcnow
from services.auth.keys import KeyRing
from services.auth.models import mailed_tokens, refresh_tokens, users
from services.kernel.db import UnitOfWork
from services.kernel.settings import Settings


def now_ms() -> datetime:
    """Now, to the millisecond: the precision of `iat` and of tokens_invalid_before."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def unix(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    expires_at: datetime


def issue_access_token(
    keyring: KeyRing, settings: Settings, user: Any, issued_at: datetime | None = None
) -> AccessToken:
    """`user` carries email, role, user_id, role_id, first_name and is_verified."""
    issued = issued_at or now_ms()
    expires = math.floor(issued.timestamp()) + settings.access_token_minutes * 60
    jti = str(uuid.uuid4())
    claims: dict[str, Any] = {
        "sub": user.email,
        "role": user.role,
        "user_id": user.user_id,
        "role_id": user.role_id,
        "name": user.first_name,
        "iat": unix(issued),
        "exp": expires,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": jti,
    }
    if user.role == "organizer" and user.is_verified:
        claims["verified"] = True
    token = jwt.encode(
        claims,
        keyring.current,
        algorithm="EdDSA",
        headers={"kid": keyring.current_kid, "typ": "JWT"},
    )
    return AccessToken(token, jti, datetime.fromtimestamp(expires, UTC))


def new_opaque_token() -> tuple[str, str]:
    """(token for the user, hash to store)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- refresh tokens ------------------------------------------------------------------


async def issue_refresh_token(
    uow: UnitOfWork, user_id: int, days: int, chain_id: uuid.UUID | None = None
) -> str:
    token, token_hash = new_opaque_token()
    await uow.execute(
        refresh_tokens.insert().values(
            token_hash=token_hash,
            user_id=user_id,
            chain_id=chain_id or uuid.uuid4(),
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    return token


async def _locked_after_its_account(uow: UnitOfWork, table: Table, *where: Any) -> Any:
    """A token's row, locked, its account's row locked first. Every change of an account's
    tokens takes the account first (a ban, a password change, an approval, a new link), so two
    never wait for each other the other way round (a deadlock: one of them a 500). And a chain
    revoked by one request sees every token another issued into it under the same lock."""
    user_id = await uow.conn.scalar(select(table.c.user_id).where(*where))
    if user_id is None:
        return None
    await uow.execute(select(users.c.user_id).where(users.c.user_id == user_id).with_for_update())
    # Read again under the locks: the row as the last change of the account left it.
    return (await uow.execute(select(table).where(*where).with_for_update())).first()


async def find_refresh_token(uow: UnitOfWork, token: str) -> Any:
    """The stored row of a presented token, locked against a concurrent rotation."""
    return await _locked_after_its_account(
        uow, refresh_tokens, refresh_tokens.c.token_hash == digest(token)
    )


async def mark_rotated(uow: UnitOfWork, token_id: int) -> None:
    await uow.execute(
        update(refresh_tokens).where(refresh_tokens.c.id == token_id).values(rotated_at=utcnow())
    )


async def revoke_chain(uow: UnitOfWork, chain_id: uuid.UUID) -> None:
    await uow.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.chain_id == chain_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_refresh_tokens_of(uow: UnitOfWork, user_id: int) -> None:
    await uow.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# ---- emailed single-use tokens -----------------------------------------------------


async def issue_mailed_token(
    uow: UnitOfWork, user_id: int, purpose: str, lifetime: timedelta
) -> str:
    """A new token for `purpose`; every earlier unused one is superseded."""
    await supersede_mailed_tokens(uow, user_id, purpose)
    token, token_hash = new_opaque_token()
    await uow.execute(
        mailed_tokens.insert().values(
            purpose=purpose,
            token_hash=token_hash,
            user_id=user_id,
            expires_at=utcnow() + lifetime,
        )
    )
    return token


async def supersede_mailed_tokens(uow: UnitOfWork, user_id: int, purpose: str) -> None:
    t = mailed_tokens
    await uow.execute(
        update(t)
        .where(
            t.c.user_id == user_id,
            t.c.purpose == purpose,
            t.c.used_at.is_(None),
            t.c.superseded_at.is_(None),
        )
        .values(superseded_at=utcnow())
    )


async def claim_mailed_token(uow: UnitOfWork, token: str, purpose: str) -> tuple[str, Any]:
    """("ok", row) after marking it used, or ("invalid" | "expired", None).

    The row is locked, so of two concurrent uses of one token exactly one gets "ok".
    """
    t = mailed_tokens
    row = await _locked_after_its_account(
        uow, t, t.c.token_hash == digest(token), t.c.purpose == purpose
    )
    if row is None or row.used_at is not None or row.superseded_at is not None:
        return "invalid", None
    if row.expires_at <= utcnow():
        return "expired", None
    await uow.execute(update(t).where(t.c.id == row.id).values(used_at=utcnow()))
    return "ok", row
