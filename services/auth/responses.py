"""What every auth HTTP handler shares: its configuration and the answer shape."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from services.auth.config import AuthConfig
from services.kernel.app import runtime

ACTIVATED = "Account activated successfully. You are now logged in."


def config_of(request: Request) -> AuthConfig:
    return runtime(request).extras["config"]  # type: ignore[no-any-return]


def answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    """Explicit status: litestar would answer a POST with 201, API.md wants 200 (§1.3)."""
    return Response(body, status_code=status, headers=headers)
