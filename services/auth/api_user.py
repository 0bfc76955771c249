"""HTTP handlers of `/api/user` (API.md §4) and the gateway's deny-list (internal)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post, put
from litestar.params import FromPath

from services.auth import domain
from services.auth.guards import signed_in
from services.auth.responses import answer, config_of
from services.auth.schemas import PasswordChange, ProfileUpdate
from services.kernel.app import runtime
from services.kernel.openapi import accepts
from services.kernel.validation import parse_json, path_id


@get("/api/user/me")
async def me(request: Request) -> Response[Any]:
    _, user = await signed_in(request)
    return answer(domain.user_details(user))


@put("/api/user/update-profile")
@accepts(body=ProfileUpdate, body_required=False)
async def update_profile(request: Request) -> Response[Any]:
    identity, _ = await signed_in(request)
    cmd = parse_json(await request.body(), ProfileUpdate, empty_ok=True)
    return answer(await domain.update_profile(runtime(request), identity.user_id, cmd))


@get("/api/user/profile/{user_id:str}")
async def profile(request: Request, user_id: FromPath[str]) -> Response[Any]:
    identity, _ = await signed_in(request)
    target = path_id(user_id, "user_id")
    return answer(await domain.public_profile(runtime(request), identity, target))


@post("/api/user/change-password", status_code=200)
@accepts(body=PasswordChange)
async def change_password(request: Request) -> Response[Any]:
    _, user = await signed_in(request)
    cmd = parse_json(await request.body(), PasswordChange)
    session = await domain.change_password(
        runtime(request), config_of(request), user, cmd.current_password, cmd.new_password
    )
    return answer(
        {
            "message": "Password changed successfully",
            "token": session.token,
            "refresh_token": session.refresh_token,
        }
    )


@get("/internal/denylist", include_in_schema=False)
async def denylist(request: Request) -> Response[Any]:
    """Banned users, revoked jtis and per-user revocation times, for the gateway."""
    async with runtime(request).db.engine.connect() as conn:
        return answer(await domain.denylist(conn))


ROUTES = [me, update_profile, profile, change_password, denylist]
