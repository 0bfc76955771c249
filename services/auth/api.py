"""HTTP handlers of auth: thin, they parse, call domain, map the answer."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from services.kernel.app import runtime


@get("/api/auth/.well-known/jwks.json")
async def jwks(request: Request) -> Response[dict[str, Any]]:
    keyring = runtime(request).extras["keyring"]
    return Response(keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


ROUTES = [jwks]
