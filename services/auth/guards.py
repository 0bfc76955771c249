"""[U] and [A] as auth applies them: auth is the source of truth for bans and revocations,
so besides the kernel's signature checks it refuses banned users and revoked tokens itself."""

from __future__ import annotations

from typing import Any

from litestar import Request
from sqlalchemy import exists, select

from services.auth.models import revoked_access_tokens
from services.auth.queries import user_by_id
from services.auth.tokens import unix
from services.kernel.app import runtime
from services.kernel.errors import Forbidden, Unauthorized
from services.kernel.security import authenticated
from services.kernel.tokens import INVALID, Identity


async def signed_in(request: Request) -> tuple[Identity, Any]:
    """[U]: the caller's identity and their current user row."""
    identity = await authenticated(request)
    async with runtime(request).db.engine.connect() as conn:
        user = await user_by_id(conn, identity.user_id)
        revoked = await conn.scalar(
            select(exists().where(revoked_access_tokens.c.jti == identity.jti))
        )
    if user is None:
        raise Unauthorized(INVALID)
    # A ban is checked first, as the gateway does (briefs/internal.md).
    if user.account_state == "banned":
        raise Forbidden("Account banned")
    invalid_before = user.tokens_invalid_before
    if revoked or (invalid_before is not None and identity.iat < unix(invalid_before)):
        raise Unauthorized("Token has been revoked")
    return identity, user


async def signed_in_administrator(request: Request) -> tuple[Identity, Any]:
    """[A]"""
    identity, user = await signed_in(request)
    if identity.role != "administrator":
        raise Forbidden("Not an administrator")
    return identity, user
