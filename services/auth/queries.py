"""Reads of auth: user details, the admin user list and stats, the gateway's deny-list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, collate, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.timeutil import utcnow
from services.auth.models import organizers, revoked_access_tokens, users
from services.auth.schemas import UserListQuery
from services.auth.tokens import unix
from services.kernel.errors import BadRequest

USER_TYPES = ("customer", "organizer", "administrator")
ACCOUNT_STATES = ("active", "unverified", "banned")
SORTS = {
    "creation_date": users.c.created_at,
    "email": collate(users.c.email, "C"),
    "first_name": collate(users.c.first_name, "C"),
    "last_name": collate(users.c.last_name, "C"),
    "user_type": collate(users.c.role, "C"),
}


def user_select() -> Select[Any]:
    """Users with their organizer data (null for other roles)."""
    return select(users, organizers.c.company_name, organizers.c.is_verified).select_from(
        users.outerjoin(organizers, organizers.c.user_id == users.c.user_id)
    )


def user_details(row: Any) -> dict[str, Any]:
    """UserDetails (API.md §3): the organizer keys are always present."""
    is_organizer = row.role == "organizer"
    return {
        "user_id": row.user_id,
        "email": row.email,
        "login": row.login,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "user_type": row.role,
        "is_active": row.account_state == "active",
        "organizer_id": row.role_id if is_organizer else None,
        "company_name": row.company_name if is_organizer else None,
        "is_verified": bool(row.is_verified) if is_organizer else None,
        "account_state": row.account_state,
    }


async def user_by_id(conn: AsyncConnection, user_id: int, lock: bool = False) -> Any:
    query = user_select().where(users.c.user_id == user_id)
    if lock:
        query = query.with_for_update(of=users)
    return (await conn.execute(query)).first()


def email_is(email: str) -> Any:
    """Emails compare case-insensitively (API.md §2.3)."""
    return func.lower(users.c.email) == func.lower(email)  # both by PostgreSQL's rules


async def user_by_email(conn: AsyncConnection, email: str, lock: bool = False) -> Any:
    """The account of this email. A lock serialises token issuing."""
    query = user_select().where(email_is(email))
    if lock:
        query = query.with_for_update(of=users)
    return (await conn.execute(query)).first()


def _choice(value: str | None, allowed: tuple[str, ...], message: str) -> str | None:
    if value is not None and value not in allowed:
        raise BadRequest(message)
    return value


def _filters(q: UserListQuery) -> list[Any]:
    """Every filter of API.md §3.17, with its 400 message, in the order listed there."""
    user_type = _choice(
        q.user_type,
        USER_TYPES,
        "Invalid user_type. Must be one of: customer, organizer, administrator",
    )
    state = _choice(
        q.account_state,
        ACCOUNT_STATES,
        "Invalid account_state. Must be one of: active, unverified, banned",
    )
    where: list[Any] = []
    if q.search:
        where.append(
            or_(
                *(
                    column.icontains(q.search, autoescape=True)
                    for column in (
                        users.c.email,
                        users.c.login,
                        users.c.first_name,
                        users.c.last_name,
                    )
                )
            )
        )
    if user_type:
        where.append(users.c.role == user_type)
    if q.is_active is not None:
        active = users.c.account_state == "active"
        where.append(active if q.is_active else ~active)
    if q.is_verified is not None:
        where.append(and_(users.c.role == "organizer", organizers.c.is_verified.is_(q.is_verified)))
    if state:
        where.append(users.c.account_state == state)
    return where


def _order(q: UserListQuery) -> list[Any]:
    if q.sort_by not in SORTS:
        raise BadRequest(
            "Invalid sort_by. Must be one of: creation_date, email, first_name, last_name, user_type"
        )
    direction = q.sort_order.lower()
    if direction not in ("asc", "desc"):
        raise BadRequest("Invalid sort_order. Must be 'asc' or 'desc'")
    key, tie = SORTS[q.sort_by], users.c.user_id
    return [key.asc(), tie.asc()] if direction == "asc" else [key.desc(), tie.desc()]


async def list_users(conn: AsyncConnection, q: UserListQuery) -> tuple[list[dict[str, Any]], int]:
    """One page of users and the number of matches before paging."""
    where = _filters(q)
    order = _order(q)
    matching = user_select().where(*where)
    total = await conn.scalar(select(func.count()).select_from(matching.subquery()))
    rows = await conn.execute(
        matching.order_by(*order).offset((q.page - 1) * q.limit).limit(q.limit)
    )
    return [user_details(row) for row in rows], int(total or 0)


async def pending_organizers(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(
        user_select()
        .where(
            users.c.role == "organizer",
            organizers.c.is_verified.is_(False),
            users.c.account_state == "active",
        )
        .order_by(users.c.user_id)
    )
    return [user_details(row) for row in rows]


async def user_stats(conn: AsyncConnection) -> dict[str, Any]:
    def count(*conditions: Any) -> Any:
        return func.count().filter(*conditions)

    state, role = users.c.account_state, users.c.role
    organizer = role == "organizer"
    row = (
        await conn.execute(
            select(
                func.count().label("total"),
                count(state == "active").label("active"),
                count(state == "unverified").label("unverified"),
                count(role == "customer").label("customers"),
                count(organizer).label("organizers"),
                count(role == "administrator").label("administrators"),
                count(organizer, organizers.c.is_verified.is_(True)).label("verified"),
                count(organizer, users.c.organizer_rejected.is_(True)).label("rejected"),
            ).select_from(users.outerjoin(organizers, organizers.c.user_id == users.c.user_id))
        )
    ).one()
    return {
        "total_users": row.total,
        "active_users": row.active,
        # Every inactive account counts as banned (existing clients rely on the sum).
        "banned_users": row.total - row.active,
        "unverified_users": row.unverified,
        "users_by_type": {
            "customers": row.customers,
            "organizers": row.organizers,
            "administrators": row.administrators,
        },
        "organizer_stats": {
            "verified": row.verified,
            "pending": row.organizers - row.verified - row.rejected,
            "rejected": row.rejected,
        },
    }


async def denylist(conn: AsyncConnection) -> dict[str, Any]:
    """What the gateway needs to refuse tokens at the edge (briefs/internal.md)."""
    banned = await conn.scalars(
        select(users.c.user_id).where(users.c.account_state == "banned").order_by(users.c.user_id)
    )
    revoked = await conn.execute(
        select(revoked_access_tokens.c.jti, revoked_access_tokens.c.expires_at).where(
            revoked_access_tokens.c.expires_at > utcnow()
        )
    )
    invalid_before = await conn.execute(
        select(users.c.user_id, users.c.tokens_invalid_before).where(
            users.c.tokens_invalid_before.is_not(None)
        )
    )
    return {
        "banned_user_ids": list(banned),
        "revoked_jtis": {row.jti: int(row.expires_at.timestamp()) for row in revoked},
        "tokens_invalid_before": {
            str(row.user_id): unix(row.tokens_invalid_before) for row in invalid_before
        },
    }
