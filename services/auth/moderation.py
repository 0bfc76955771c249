"""What administrators do to accounts (API.md §3.12, §3.14–3.16). Every action is audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from contracts.auth import (
    EmailVerified,
    OrganizerRejected,
    OrganizerVerified,
    UserBanned,
    UserUnbanned,
)
from services.auth import audit
from services.auth.models import organizers, users
from services.auth.queries import user_by_id, user_details, user_select
from services.auth.tokens import (
    AccessToken,
    issue_access_token,
    now_ms,
    revoke_refresh_tokens_of,
    supersede_mailed_tokens,
)
from services.kernel.app import Runtime, applied_by
from services.kernel.db import UnitOfWork
from services.kernel.errors import BadRequest, Forbidden, NotFound


async def _target(uow: UnitOfWork, user_id: int) -> Any:
    user = await user_by_id(uow.conn, user_id, lock=True)
    if user is None:
        raise NotFound("User not found")
    return user


async def approve_user(rt: Runtime, admin_id: int, user_id: int) -> AccessToken:
    """Activate an unverified customer (only that one) and sign them in."""
    async with rt.db.unit_of_work() as uow:
        user = await _target(uow, user_id)
        if user.account_state == "active":
            raise BadRequest("User is active")
        if user.account_state == "banned":
            raise BadRequest("User is banned")
        await uow.execute(
            update(users).where(users.c.user_id == user_id).values(email_verified=True)
        )
        await supersede_mailed_tokens(uow, user_id, "verify_email")
        access = issue_access_token(rt.extras["keyring"], rt.settings, user)
        await audit.record(uow, "approve_user", admin_id, user_id, access.jti)
        uow.emit(
            EmailVerified(user_id=user_id, method="admin_approval", approved_by=admin_id),
            aggregate_id=user_id,
        )
        await uow.commit()
    return access


async def ban(rt: Runtime, admin_id: int, user_id: int) -> None:
    async with rt.db.unit_of_work() as uow:
        user = await _target(uow, user_id)
        if user_id == admin_id:
            raise BadRequest("Cannot ban yourself")
        if user.role == "administrator":
            raise Forbidden("Cannot ban administrator accounts")
        if user.account_state == "banned":
            raise BadRequest("User is already banned")
        at = now_ms()
        # Tokens issued before the ban stay invalid even after an unban.
        await uow.execute(
            update(users)
            .where(users.c.user_id == user_id)
            .values(banned_at=at, tokens_invalid_before=at)
        )
        await revoke_refresh_tokens_of(uow, user_id)
        await audit.record(uow, "ban_user", admin_id, user_id)
        uow.emit(
            UserBanned(
                user_id=user_id, role=user.role, role_id=user.role_id, at=at, account_state="banned"
            ),
            aggregate_id=user_id,
        )
        await uow.commit()
    await applied_by(rt, uow)  # "effective immediately everywhere" (§3.15): listings, events


async def unban(rt: Runtime, admin_id: int, user_id: int) -> None:
    """Back to the state before the ban; a rejected organizer is pending again (§2.2)."""
    async with rt.db.unit_of_work() as uow:
        user = await _target(uow, user_id)
        if user.account_state != "banned":
            raise BadRequest("User is not banned")
        # Tokens issued before the ban stay invalid (§3.16), whichever ban it was: a ban-user
        # ban set the line already; a rejection (§2.2) did not, and no token can have been
        # issued while banned, so the line moves to now.
        at = now_ms()
        await uow.execute(
            update(users)
            .where(users.c.user_id == user_id)
            .values(banned_at=None, organizer_rejected=False, tokens_invalid_before=at)
        )
        after = await user_by_id(uow.conn, user_id)
        await audit.record(uow, "unban_user", admin_id, user_id)
        uow.emit(
            UserUnbanned(
                user_id=user_id,
                role=user.role,
                role_id=user.role_id,
                at=at,
                account_state=after.account_state,
            ),
            aggregate_id=user_id,
        )
        await uow.commit()
    await applied_by(rt, uow)


async def decide_organizer(
    rt: Runtime, admin_id: int, organizer_id: int, approve: bool
) -> dict[str, Any]:
    """Verify or reject an organizer; repeating a decision changes nothing."""
    async with rt.db.unit_of_work() as uow:
        row = (
            await uow.execute(
                user_select()
                .where(organizers.c.organizer_id == organizer_id, users.c.role == "organizer")
                .with_for_update(of=users)
            )
        ).first()
        if row is None:
            raise NotFound("Organizer not found")
        unchanged = (
            (row.is_verified and not row.organizer_rejected)
            if approve
            else (row.organizer_rejected and not row.is_verified)
        )
        if not unchanged:
            await _apply_decision(uow, admin_id, row, approve)
        after = await user_by_id(uow.conn, row.user_id)
        await uow.commit()
    await applied_by(rt, uow)  # nothing written when the decision was made before
    return user_details(after)


async def _apply_decision(uow: UnitOfWork, admin_id: int, row: Any, approve: bool) -> None:
    await uow.execute(
        update(organizers)
        .where(organizers.c.organizer_id == row.role_id)
        .values(is_verified=approve)
    )
    # Approval lifts a rejection; a ban-user ban stays (banned_at is untouched). A rejection
    # is a ban (§3.12): tokens issued before it stay invalid once it is lifted, as after an
    # unban, and none can have been issued while rejected, so the line moves to now.
    lifted = now_ms() if approve and row.organizer_rejected else None
    await uow.execute(
        update(users)
        .where(users.c.user_id == row.user_id)
        .values(
            organizer_rejected=not approve,
            **({"tokens_invalid_before": lifted} if lifted else {}),
        )
    )
    if not approve:
        await revoke_refresh_tokens_of(uow, row.user_id)
    state = (await user_by_id(uow.conn, row.user_id)).account_state
    await audit.record(
        uow, "verify_organizer" if approve else "reject_organizer", admin_id, row.user_id
    )
    common = {"user_id": row.user_id, "organizer_id": row.role_id, "by": admin_id}
    event = (
        OrganizerVerified(**common, account_state=state, at=lifted)
        if approve
        else OrganizerRejected(**common, account_state=state, at=now_ms())
    )
    uow.emit(event, aggregate_id=row.user_id)
