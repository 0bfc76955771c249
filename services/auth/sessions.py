"""Signing in and out: login (API.md §3.4), refresh (§3.5), logout (§3.6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from contracts.auth import AccessTokenRevoked
from contracts.timeutil import utcnow
from services.auth.config import AuthConfig
from services.auth.models import revoked_access_tokens
from services.auth.passwords import verify_password
from services.auth.queries import user_by_email, user_by_id
from services.auth.tokens import (
    find_refresh_token,
    issue_access_token,
    issue_refresh_token,
    mark_rotated,
    revoke_chain,
)
from services.kernel.app import Runtime
from services.kernel.credentials import account_spelling
from services.kernel.errors import Forbidden, Unauthorized
from services.kernel.tokens import Identity

PENDING = "Your account is pending verification by an administrator"


@dataclass(frozen=True)
class Session:
    token: str
    refresh_token: str


def refuse_inactive(user: Any) -> None:
    if user.account_state == "banned":
        raise Forbidden("Account banned")
    if user.account_state == "unverified":
        raise Forbidden("Email not verified")


async def login(rt: Runtime, config: AuthConfig, email: str, password: str) -> Session | None:
    """A new session, or None for an organizer still awaiting verification."""
    async with rt.db.engine.connect() as conn:  # the address normalised as it was stored
        user = await user_by_email(conn, account_spelling(email))
    # The password is checked before the account state, and always costs one hash.
    if not await verify_password(user.password_hash if user else None, password):
        raise Unauthorized("Incorrect email or password")
    checked_hash = user.password_hash
    refuse_inactive(user)
    if user.role == "organizer" and not user.is_verified:
        return None
    async with rt.db.unit_of_work() as uow:
        # The account as it is now, locked while the session is issued: a change of
        # password, a ban or a rejection committed while the password was being checked
        # refuses it; one that comes later waits, and then revokes what was issued.
        user = await user_by_id(uow.conn, user.user_id, lock=True)
        if user.password_hash != checked_hash:
            raise Unauthorized("Incorrect email or password")
        refuse_inactive(user)
        if user.role == "organizer" and not user.is_verified:
            return None
        refresh = await issue_refresh_token(uow, user.user_id, config.refresh_token_days)
        access = issue_access_token(rt.extras["keyring"], rt.settings, user)
        await uow.commit()
    return Session(access.token, refresh)


class InvalidRefreshToken(Unauthorized):
    def __init__(self) -> None:
        super().__init__("Invalid refresh token")


async def refresh(rt: Runtime, config: AuthConfig, token: str) -> Session:
    """Rotate a refresh token; presenting one already rotated revokes its whole chain."""
    async with rt.db.unit_of_work() as uow:
        row = await find_refresh_token(uow, token)
        if row is None:
            raise InvalidRefreshToken()
        if row.rotated_at is not None:
            # Someone replays a used token: the chain may be stolen, end it for everyone.
            await revoke_chain(uow, row.chain_id)
            await uow.commit()
            raise InvalidRefreshToken()
        if row.revoked_at is not None or row.expires_at <= utcnow():
            raise InvalidRefreshToken()
        # Locked while the tokens are issued: a ban or a change of password waits for them,
        # then revokes them (the new refresh token included).
        user = await user_by_id(uow.conn, row.user_id, lock=True)
        if user.account_state == "banned":
            raise Forbidden("Account banned")
        await mark_rotated(uow, row.id)
        new_refresh = await issue_refresh_token(
            uow, user.user_id, config.refresh_token_days, row.chain_id
        )
        access = issue_access_token(rt.extras["keyring"], rt.settings, user)
        await uow.commit()
    return Session(access.token, new_refresh)


async def logout(rt: Runtime, identity: Identity | None, refresh_token: str | None) -> None:
    """Revoke what was presented and valid; anything else is ignored."""
    async with rt.db.unit_of_work() as uow:
        if identity is not None:
            expires_at = datetime.fromtimestamp(identity.exp, UTC)
            inserted = await uow.execute(
                insert(revoked_access_tokens)
                .values(jti=identity.jti, user_id=identity.user_id, expires_at=expires_at)
                .on_conflict_do_nothing()
            )
            if inserted.rowcount:
                uow.emit(
                    AccessTokenRevoked(
                        jti=identity.jti, user_id=identity.user_id, expires_at=expires_at
                    ),
                    aggregate_id=identity.user_id,
                )
        if refresh_token:
            row = await find_refresh_token(uow, refresh_token)
            if row is not None:
                await revoke_chain(uow, row.chain_id)
        await uow.commit()
