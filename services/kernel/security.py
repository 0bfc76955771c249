"""The guards of API.md §2.4: [U], [A], [O] (role part), [C]."""

from __future__ import annotations

from litestar import Request

from services.kernel.errors import Forbidden, Unauthorized
from services.kernel.tokens import Identity, bearer_token


async def optional_identity(request: Request) -> Identity | None:
    """Anonymous when no Authorization header; a present but invalid token is still a 401, as
    are two headers (each hop could read another)."""
    headers = request.headers.getall("authorization", None)
    if not headers:
        return None
    token = bearer_token(headers[0]) if len(headers) == 1 else None
    if token is None:
        raise Unauthorized("Not authenticated")
    return await request.app.state.runtime.verifier.verify(token)


async def authenticated(request: Request) -> Identity:
    """[U]"""
    identity = await optional_identity(request)
    if identity is None:
        raise Unauthorized("Not authenticated")
    return identity


async def administrator(request: Request) -> Identity:
    """[A]"""
    identity = await authenticated(request)
    if identity.role != "administrator":
        raise Forbidden("Not an administrator")
    return identity


async def organizer(request: Request) -> Identity:
    """[O] up to the role; whether the organizer is verified is catalog's rule."""
    identity = await authenticated(request)
    if identity.role != "organizer":
        raise Forbidden("Not an organizer")
    return identity


async def customer(request: Request) -> Identity:
    """[C]"""
    identity = await authenticated(request)
    if identity.role != "customer":
        raise Forbidden("Only customers can purchase tickets")
    return identity
