"""Proving an email and recovering or changing a password (API.md §3.8–3.11, §4.4)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from contracts.auth import EmailVerified, PasswordChanged
from services.auth.config import AuthConfig
from services.auth.models import users
from services.auth.passwords import hash_password, verify_password
from services.auth.queries import user_by_email, user_by_id
from services.auth.registration import send_verification_mail
from services.auth.sessions import Session
from services.auth.tokens import (
    AccessToken,
    claim_mailed_token,
    issue_access_token,
    issue_mailed_token,
    issue_refresh_token,
    now_ms,
    revoke_refresh_tokens_of,
)
from services.kernel.app import Runtime
from services.kernel.db import UnitOfWork
from services.kernel.errors import BadRequest, Forbidden
from services.kernel.mail import queue_mail

log = logging.getLogger("resellio.auth")


async def verify_email(rt: Runtime, token: str) -> AccessToken:
    async with rt.db.unit_of_work() as uow:
        outcome, claimed = await claim_mailed_token(uow, token, "verify_email")
        if outcome == "invalid":
            raise BadRequest("Invalid or already used verification token.")
        if outcome == "expired":
            raise BadRequest("Verification token has expired. Please request a new one.")
        await uow.execute(
            update(users).where(users.c.user_id == claimed.user_id).values(email_verified=True)
        )
        uow.emit(
            EmailVerified(user_id=claimed.user_id, method="email_link"),
            aggregate_id=claimed.user_id,
        )
        user = await user_by_id(uow.conn, claimed.user_id)
        await uow.commit()
    # Banned meanwhile: the email stays verified, but no token.
    if user.account_state == "banned":
        raise Forbidden("Account banned")
    return issue_access_token(rt.extras["keyring"], rt.settings, user)


async def resend_verification(rt: Runtime, config: AuthConfig, email: str) -> None:
    async with rt.db.unit_of_work() as uow:
        user = await user_by_email(uow.conn, email, lock=True)
        if user is None or user.account_state != "unverified":
            return
        await send_verification_mail(uow, config, user)
        await uow.commit()


def request_password_reset(rt: Runtime, config: AuthConfig, email: str) -> None:
    """Mails a reset link to a registered email, after the answer: the answer takes the same
    time whether or not the email exists (API.md §3.10)."""
    task = asyncio.create_task(_mail_reset_link(rt, config, email))
    running: set[asyncio.Task[None]] = rt.extras.setdefault("background", set())
    running.add(task)
    task.add_done_callback(running.discard)


async def _mail_reset_link(rt: Runtime, config: AuthConfig, email: str) -> None:
    try:
        await _issue_reset_link(rt, config, email)
    except Exception:
        log.exception("could not issue a password reset link")


async def _issue_reset_link(rt: Runtime, config: AuthConfig, email: str) -> None:
    async with rt.db.unit_of_work() as uow:
        user = await user_by_email(uow.conn, email, lock=True)
        if user is None:
            return
        token = await issue_mailed_token(
            uow, user.user_id, "reset_password", timedelta(minutes=config.reset_minutes)
        )
        await queue_mail(
            uow,
            user.email,
            "Reset your Resellio password",
            f"Hello {user.first_name},\n\nopen this link to choose a new password:\n"
            f"{config.password_reset_url}?token={token}\n\n"
            f"The link is valid for {config.reset_minutes} minutes and can be used once. "
            "If you did not ask for it, ignore this email.\n",
        )
        await uow.commit()


async def _set_password(uow: UnitOfWork, user_id: int, password_hash: str) -> None:
    """New hash; every refresh token and every access token issued before now revoked. The
    account is locked first, so "now" comes after any session being issued meanwhile."""
    await user_by_id(uow.conn, user_id, lock=True)
    changed_at = now_ms()
    await uow.execute(
        update(users)
        .where(users.c.user_id == user_id)
        .values(password_hash=password_hash, tokens_invalid_before=changed_at)
    )
    await revoke_refresh_tokens_of(uow, user_id)
    uow.emit(PasswordChanged(user_id=user_id, changed_at=changed_at), aggregate_id=user_id)


async def reset_password(rt: Runtime, token: str, new_password: str) -> None:
    password_hash = await hash_password(new_password)
    async with rt.db.unit_of_work() as uow:
        outcome, claimed = await claim_mailed_token(uow, token, "reset_password")
        if outcome != "ok":
            raise BadRequest("Invalid or expired reset token")
        await _set_password(uow, claimed.user_id, password_hash)
        await uow.commit()


async def change_password(
    rt: Runtime, config: AuthConfig, user: Any, current: str, new: str
) -> Session:
    if not await verify_password(user.password_hash, current):
        raise BadRequest("Current password is incorrect")
    password_hash = await hash_password(new)
    async with rt.db.unit_of_work() as uow:
        await _set_password(uow, user.user_id, password_hash)
        refresh = await issue_refresh_token(uow, user.user_id, config.refresh_token_days)
        await uow.commit()
    # Issued after tokens_invalid_before (same millisecond at the earliest), so it stays valid.
    access = issue_access_token(rt.extras["keyring"], rt.settings, user)
    return Session(access.token, refresh)
