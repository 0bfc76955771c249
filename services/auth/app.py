"""The auth service: users, roles, credentials, tokens, organizer verification, bans."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar

from services.auth import api, domain
from services.auth.config import AuthConfig, load_auth_config
from services.auth.consumers import HANDLERS
from services.auth.keys import load_keyring, load_pem
from services.auth.models import metadata
from services.auth.passwords import start_hasher, warm_up_hasher
from services.kernel import settings as settings_mod
from services.kernel.app import Runtime, create_service_app
from services.kernel.logs import configure
from services.kernel.settings import ConfigError
from services.topology import subscriptions


def _local_jwks(rt: Runtime) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def source() -> dict[str, Any]:
        return rt.extras["keyring"].jwks()  # type: ignore[no-any-return]

    return source


def _start(config: AuthConfig) -> Callable[[Runtime], Awaitable[None]]:
    async def start(rt: Runtime) -> None:
        start_hasher(config.password_hash_workers)
        rt.extras["config"] = config
        rt.extras["keyring"] = await load_keyring(
            rt.db, config.jwt_private_key, rt.settings.access_token_minutes
        )
        await domain.ensure_initial_admin(rt, config)
        await warm_up_hasher()

    return start


def _checked_config(settings: settings_mod.Settings) -> AuthConfig:
    """Production without its secrets stops here, with one message naming what is missing."""
    try:
        config = load_auth_config(settings.development)
        if config.jwt_private_key:
            try:
                load_pem(config.jwt_private_key)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"JWT_PRIVATE_KEY is not usable: {exc}") from exc
        return config
    except ConfigError as exc:
        sys.exit(f"error: {exc}")


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    configure("auth", settings.log_level)
    config = _checked_config(settings)
    return create_service_app(
        service="auth",
        settings=settings,
        metadata=metadata,
        route_handlers=api.ROUTES,
        handlers=HANDLERS,
        topology=subscriptions(),
        jwks_source=_local_jwks,
        on_startup=[_start(config)],
        sends_mail=True,
    )
