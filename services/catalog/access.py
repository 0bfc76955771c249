"""Who may see and who may write (API.md §2.2, §2.4 [O], §6 visibility)."""

from __future__ import annotations

from typing import Any, NoReturn

from litestar import Request
from sqlalchemy import ColumnElement, or_, select, true

from services.catalog.models import events, organizers
from services.kernel.app import runtime
from services.kernel.errors import Forbidden
from services.kernel.security import authenticated, organizer
from services.kernel.tokens import Identity

PUBLIC_STATUSES = ("created", "cancelled")


async def verified_organizer(request: Request) -> Identity:
    """[O]: the role, then the account (banned first, API.md §2.4), then verification.

    A token issued before the verification lacks the `verified` claim and never passes. A
    token that has it passes only while auth's events (caught up first, so a decision that
    has just been answered counts) still say verified and active: a rejected or banned
    organizer is refused at once, whatever token they hold.
    """
    identity = await organizer(request)
    rt = runtime(request)
    caught_up = await rt.catch_up("auth")

    async def refuse(detail: str) -> NoReturn:
        """A refusal read from auth's events: given once caught up with them, a 503 if auth
        cannot be asked (it could be a 200 a moment later, API.md §1.8). Only a catch-up
        above that did not succeed is asked again, strictly."""
        if not caught_up:
            await rt.catch_up.before_refusing("auth")
        raise Forbidden(detail)

    async with rt.db.engine.connect() as conn:
        row = (
            await conn.execute(
                select(organizers.c.verified, organizers.c.account_state).where(
                    organizers.c.organizer_id == identity.role_id
                )
            )
        ).first()
    if row is not None and row.account_state != "active":
        await refuse("Account banned")
    if not identity.verified:
        raise Forbidden("Organizer not verified")  # the token's own say
    if row is None or not row.verified:
        await refuse("Organizer not verified")
    return identity


async def organizer_or_administrator(request: Request) -> Identity:
    """Cancel (6.5): [A], or [O] for the owner; a customer gets 403 "Not an organizer"."""
    identity = await authenticated(request)
    if identity.role == "administrator":
        return identity
    return await verified_organizer(request)


def visible_to(identity: Identity | None) -> ColumnElement[Any]:
    """The events a caller may see: public statuses, an organizer's own, everything for admins."""
    if identity is not None and identity.role == "administrator":
        return true()
    public = events.c.status.in_(PUBLIC_STATUSES)
    if identity is not None and identity.role == "organizer":
        return or_(public, events.c.organizer_id == identity.role_id)
    return public
