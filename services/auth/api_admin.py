"""HTTP handlers of the administrator endpoints (API.md §3.3, §3.12–3.19)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath

from services.auth import domain
from services.auth.guards import signed_in_administrator
from services.auth.responses import ACTIVATED, answer, config_of
from services.auth.schemas import AdminRegistration, OrganizerDecision, UserListQuery
from services.kernel.app import runtime
from services.kernel.errors import NotFound
from services.kernel.openapi import accepts
from services.kernel.validation import parse_json, parse_query, path_id


@post("/api/auth/register/admin")
@accepts(body=AdminRegistration)
async def register_admin(request: Request) -> Response[Any]:
    admin, _ = await signed_in_administrator(request)
    cmd = parse_json(await request.body(), AdminRegistration)
    done = await domain.register_admin(runtime(request), config_of(request), cmd, admin.user_id)
    assert done.access is not None
    body = {"token": done.access.token, "message": "Administrator registered successfully"}
    return answer(body, 201)


@post("/api/auth/verify-organizer", status_code=200)
@accepts(body=OrganizerDecision)
async def verify_organizer(request: Request) -> Response[Any]:
    admin, _ = await signed_in_administrator(request)
    cmd = parse_json(await request.body(), OrganizerDecision)
    details = await domain.decide_organizer(
        runtime(request), admin.user_id, cmd.organizer_id, cmd.approve
    )
    return answer(details)


@get("/api/auth/pending-organizers")
async def pending_organizers(request: Request) -> Response[Any]:
    await signed_in_administrator(request)
    async with runtime(request).db.engine.connect() as conn:
        pending = await domain.pending_organizers(conn)
    return answer(pending, headers={"X-Total-Count": str(len(pending))})


@post("/api/auth/approve-user/{user_id:str}", status_code=200)
async def approve_user(request: Request, user_id: FromPath[str]) -> Response[Any]:
    admin, _ = await signed_in_administrator(request)
    target = path_id(user_id, "user_id")
    access = await domain.approve_user(runtime(request), admin.user_id, target)
    return answer({"token": access.token, "message": ACTIVATED})


@post("/api/auth/ban-user/{user_id:str}", status_code=200)
async def ban_user(request: Request, user_id: FromPath[str]) -> Response[Any]:
    admin, _ = await signed_in_administrator(request)
    await domain.ban(runtime(request), admin.user_id, path_id(user_id, "user_id"))
    return answer({"message": "User has been banned"})


@post("/api/auth/unban-user/{user_id:str}", status_code=200)
async def unban_user(request: Request, user_id: FromPath[str]) -> Response[Any]:
    admin, _ = await signed_in_administrator(request)
    await domain.unban(runtime(request), admin.user_id, path_id(user_id, "user_id"))
    return answer({"message": "User has been unbanned"})


@get("/api/auth/users")
@accepts(query=UserListQuery)
async def list_users(request: Request) -> Response[Any]:
    await signed_in_administrator(request)
    query = parse_query(request.query_params, UserListQuery)
    async with runtime(request).db.engine.connect() as conn:
        page, total = await domain.list_users(conn, query)
    return answer(page, headers={"X-Total-Count": str(total)})


@get("/api/auth/users/stats")
async def user_stats(request: Request) -> Response[Any]:
    await signed_in_administrator(request)
    async with runtime(request).db.engine.connect() as conn:
        return answer(await domain.user_stats(conn))


@get("/api/auth/users/{user_id:str}")
async def user_details(request: Request, user_id: FromPath[str]) -> Response[Any]:
    await signed_in_administrator(request)
    target = path_id(user_id, "user_id")
    async with runtime(request).db.engine.connect() as conn:
        user = await domain.user_by_id(conn, target)
    if user is None:
        raise NotFound("User not found")
    return answer(domain.user_details(user))


ROUTES = [
    register_admin,
    verify_organizer,
    pending_organizers,
    approve_user,
    ban_user,
    unban_user,
    list_users,
    user_stats,
    user_details,
]
