"""New accounts (API.md §3.1–3.3) and the initial administrator (§2.6)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select, text
from sqlalchemy.exc import IntegrityError

from contracts.auth import UserRegistered
from services.auth import audit
from services.auth.config import AuthConfig
from services.auth.models import ROLE_TABLES, users
from services.auth.passwords import hash_password
from services.auth.queries import email_is, user_by_email, user_by_id
from services.auth.schemas import AdminRegistration, CustomerRegistration
from services.auth.tokens import AccessToken, issue_access_token, issue_mailed_token
from services.kernel.app import Runtime
from services.kernel.db import UnitOfWork
from services.kernel.errors import BadRequest, Forbidden
from services.kernel.mail import queue_mail

RESERVED = "This email address is reserved and cannot be used for registration"


@dataclass(frozen=True)
class Registered:
    user: Any
    access: AccessToken | None = None


async def _check_available(uow: UnitOfWork, cmd: CustomerRegistration, reserved: str) -> None:
    """The 400s of §3.1, in order."""
    if cmd.email.lower() == reserved.lower():
        raise BadRequest(RESERVED)
    # Both in one statement, so one snapshot: asked one after the other, a concurrent
    # duplicate committed between them showed as a taken login, not a registered email.
    email_taken, login_taken = (
        await uow.conn.execute(
            select(
                exists().where(email_is(cmd.email)),
                exists().where(users.c.login == cmd.login),
            )
        )
    ).one()
    if email_taken:
        raise BadRequest("Email already registered")
    if login_taken:
        raise BadRequest("Login already taken")


async def _insert_user(
    uow: UnitOfWork,
    cmd: CustomerRegistration,
    role: str,
    password_hash: str,
    company_name: str | None,
) -> Any:
    """The user, its row in the role's table (which numbers role ids) and UserRegistered."""
    role_table = ROLE_TABLES[role]
    id_column = next(iter(role_table.primary_key.columns))
    role_id = await uow.conn.scalar(
        select(func.nextval(func.pg_get_serial_sequence(f"auth.{role_table.name}", id_column.name)))
    )
    user_id = await uow.conn.scalar(
        users.insert()
        .values(
            email=cmd.email,
            login=cmd.login,
            password_hash=password_hash,
            first_name=cmd.first_name,
            last_name=cmd.last_name,
            role=role,
            role_id=role_id,
            email_verified=role != "customer",
        )
        .returning(users.c.user_id)
    )
    extra = {"company_name": company_name} if role == "organizer" else {}
    await uow.execute(
        role_table.insert().values({id_column.name: role_id, "user_id": user_id, **extra})
    )
    user = await user_by_id(uow.conn, user_id)
    uow.emit(
        UserRegistered(
            user_id=user.user_id,
            email=user.email,
            role=role,
            role_id=user.role_id,
            first_name=user.first_name,
            last_name=user.last_name,
            login=user.login,
            account_state=user.account_state,
            company_name=company_name,
            is_verified=False if role == "organizer" else None,
        ),
        aggregate_id=user.user_id,
    )
    return user


async def register(
    rt: Runtime,
    config: AuthConfig,
    cmd: CustomerRegistration,
    role: str,
    company_name: str | None = None,
    registered_by: int | None = None,
) -> Registered:
    """Create the account; of two concurrent duplicates exactly one succeeds."""
    password_hash = await hash_password(cmd.password)
    for attempt in range(3):
        async with rt.db.unit_of_work() as uow:
            await _check_available(uow, cmd, config.initial_admin_email)
            try:
                user = await _insert_user(uow, cmd, role, password_hash, company_name)
            except IntegrityError:
                # A concurrent registration won the unique index; the checks above now
                # see it and answer with the right message.
                if attempt == 2:
                    raise
                continue
            result = await _welcome(rt, config, uow, user, registered_by)
            await uow.commit()
            return result
    raise AssertionError("unreachable")


async def _welcome(
    rt: Runtime, config: AuthConfig, uow: UnitOfWork, user: Any, registered_by: int | None
) -> Registered:
    if user.role == "customer":
        await send_verification_mail(uow, config, user)
        return Registered(user)
    access = issue_access_token(rt.extras["keyring"], rt.settings, user)
    if registered_by is not None:
        await audit.record(uow, "register_admin", registered_by, user.user_id, access.jti)
    return Registered(user, access)


async def send_verification_mail(uow: UnitOfWork, config: AuthConfig, user: Any) -> None:
    token = await issue_mailed_token(
        uow, user.user_id, "verify_email", timedelta(hours=config.verification_hours)
    )
    link = f"{config.app_base_url}/api/auth/verify-email?token={token}"
    await queue_mail(
        uow,
        user.email,
        "Activate your Resellio account",
        f"Hello {user.first_name},\n\nopen this link to activate your account:\n{link}\n\n"
        f"The link is valid for {config.verification_hours} hours and can be used once.\n",
    )


def check_admin_secret(config: AuthConfig, given: str) -> None:
    if not hmac.compare_digest(given.encode(), config.admin_secret_key.encode()):
        raise Forbidden("Invalid admin secret key")


async def register_admin(
    rt: Runtime, config: AuthConfig, cmd: AdminRegistration, by: int
) -> Registered:
    check_admin_secret(config, cmd.admin_secret_key)
    return await register(rt, config, cmd, "administrator", registered_by=by)


async def ensure_initial_admin(rt: Runtime, config: AuthConfig) -> None:
    """Create the initial administrator unless that email exists (never alters an account).

    Several instances may start together: an advisory lock lets one create it.
    """
    email = config.initial_admin_email
    async with rt.db.engine.connect() as conn:
        if await user_by_email(conn, email) is not None:
            return
    password_hash = await hash_password(config.initial_admin_password)
    async with rt.db.unit_of_work() as uow:
        await uow.execute(text("SELECT pg_advisory_xact_lock(hashtext('auth:initial-admin'))"))
        if await user_by_email(uow.conn, email) is not None:
            return
        login = email.split("@")[0]
        if await uow.conn.scalar(select(exists().where(users.c.login == login))):
            login = email
        cmd = CustomerRegistration(email, login, "-", "Admin", "Resellio")
        await _insert_user(uow, cmd, "administrator", password_hash, None)
        await uow.commit()
