"""The auth service: users, roles, credentials, tokens, organizer verification, bans."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar

from services.auth import api
from services.auth.consumers import HANDLERS
from services.auth.keys import load_keyring
from services.auth.models import metadata
from services.kernel import settings as settings_mod
from services.kernel.app import Runtime, create_service_app
from services.kernel.logs import configure
from services.topology import subscriptions


def _local_jwks(rt: Runtime) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def source() -> dict[str, Any]:
        return rt.extras["keyring"].jwks()  # type: ignore[no-any-return]

    return source


async def _load_keys(rt: Runtime) -> None:
    rt.extras["keyring"] = await load_keyring(
        rt.db, os.environ.get("JWT_PRIVATE_KEY") or None, rt.settings.access_token_minutes
    )


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    configure("auth", settings.log_level)
    return create_service_app(
        service="auth",
        settings=settings,
        metadata=metadata,
        route_handlers=api.ROUTES,
        handlers=HANDLERS,
        topology=subscriptions(),
        jwks_source=_local_jwks,
        on_startup=[_load_keys],
    )
