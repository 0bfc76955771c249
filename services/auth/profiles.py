"""A user's own account and what others may see of it (API.md §4.2, §4.3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError

from contracts.auth import UserProfileUpdated
from services.auth.models import users
from services.auth.queries import user_by_id, user_details
from services.auth.schemas import ProfileUpdate
from services.kernel.app import Runtime, applied_by
from services.kernel.errors import BadRequest, NotFound
from services.kernel.tokens import Identity

LOGIN_TAKEN = "Login already taken"


async def update_profile(rt: Runtime, user_id: int, cmd: ProfileUpdate) -> dict[str, Any]:
    changes = {
        k: v
        for k, v in (
            ("first_name", cmd.first_name),
            ("last_name", cmd.last_name),
            ("login", cmd.login),
        )
        if v is not None
    }
    try:
        async with rt.db.unit_of_work() as uow:
            if cmd.login is not None:
                taken = await uow.conn.scalar(
                    select(exists().where(users.c.login == cmd.login, users.c.user_id != user_id))
                )
                if taken:
                    raise BadRequest(LOGIN_TAKEN)
            if changes:
                await uow.execute(update(users).where(users.c.user_id == user_id).values(changes))
            user = await user_by_id(uow.conn, user_id)
            if changes:
                uow.emit(
                    UserProfileUpdated(
                        user_id=user_id,
                        login=user.login,
                        first_name=user.first_name,
                        last_name=user.last_name,
                    ),
                    aggregate_id=user_id,
                )
            await uow.commit()
    except IntegrityError as exc:
        # Another user took the login between the check and the update.
        raise BadRequest(LOGIN_TAKEN) from exc
    await applied_by(rt, uow)  # the name on the holder's tickets (ordering's PDF), at once
    return user_details(user)


async def public_profile(rt: Runtime, viewer: Identity, user_id: int) -> dict[str, Any]:
    """Login and email only for administrators and the user themself."""
    async with rt.db.engine.connect() as conn:
        user = await user_by_id(conn, user_id)
    if user is None:
        raise NotFound("User not found")
    private = viewer.role == "administrator" or viewer.user_id == user_id
    return {
        "user_id": user.user_id,
        "email": user.email if private else None,
        "login": user.login if private else None,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "user_type": user.role,
        "is_active": user.account_state == "active",
        "account_state": user.account_state,
    }
