"""Auth's own settings (API.md §2.5, §2.6): read from the environment once at start-up.

Only development has defaults for the initial administrator and the admin secret key;
production refuses to start until every secret is given explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from services.auth.passwords import password_problem, usable_cores
from services.auth.schemas import valid_email
from services.kernel.settings import ConfigError
from services.kernel.validation import FieldError

DEV_ADMIN_EMAIL = "admin@resellio.com"
DEV_ADMIN_PASSWORD = "AdminPassword123!"
DEV_ADMIN_SECRET_KEY = "resellio-dev-admin-secret"
DEFAULT_APP_BASE_URL = "http://127.0.0.1:8080"


class AuthConfig(msgspec.Struct, kw_only=True, frozen=True):
    initial_admin_email: str
    initial_admin_password: str
    admin_secret_key: str
    jwt_private_key: str | None
    app_base_url: str = DEFAULT_APP_BASE_URL
    password_reset_url: str = f"{DEFAULT_APP_BASE_URL}/reset-password"
    refresh_token_days: int = 14
    verification_hours: int = 24
    reset_minutes: int = 60
    password_hash_workers: int = 1  # threads hashing passwords (services/auth/passwords.py)


def load_auth_config(development: bool, env: Mapping[str, str] | None = None) -> AuthConfig:
    """Raise ConfigError naming every missing production secret in one message."""
    env = os.environ if env is None else env

    def given(name: str) -> str | None:
        return (env.get(name) or "").strip() or None

    if not development:
        missing = [
            name
            for name in (
                "INITIAL_ADMIN_EMAIL",
                "INITIAL_ADMIN_PASSWORD",
                "ADMIN_SECRET_KEY",
                "JWT_PRIVATE_KEY",
            )
            if not given(name)
        ]
        if missing:
            raise ConfigError(
                "auth refuses to start in production without "
                + ", ".join(missing)
                + " (set them, or ENVIRONMENT=development for local defaults)"
            )
        # The development defaults are public (they are in this file): never in production.
        published = [
            name
            for name, default in (
                ("INITIAL_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD),
                ("ADMIN_SECRET_KEY", DEV_ADMIN_SECRET_KEY),
            )
            if given(name) == default
        ]
        if published:
            raise ConfigError(
                "auth refuses to start in production with the development default of "
                + ", ".join(published)
                + " (choose your own secret)"
            )
        problem = password_problem(env["INITIAL_ADMIN_PASSWORD"])
        if problem:
            raise ConfigError(f"INITIAL_ADMIN_PASSWORD is too weak: {problem}")
    admin_email = given("INITIAL_ADMIN_EMAIL") or DEV_ADMIN_EMAIL
    try:
        admin_email = valid_email(admin_email)
    except FieldError as exc:
        raise ConfigError(f"INITIAL_ADMIN_EMAIL is not usable: {exc.msg}") from exc
    base_url = (given("APP_BASE_URL") or DEFAULT_APP_BASE_URL).rstrip("/")
    try:
        refresh_days = int(given("REFRESH_TOKEN_EXPIRE_DAYS") or 14)
    except ValueError as exc:
        raise ConfigError("REFRESH_TOKEN_EXPIRE_DAYS must be an integer") from exc
    try:
        hash_workers = int(given("PASSWORD_HASH_WORKERS") or usable_cores())
    except ValueError:
        hash_workers = 0
    if hash_workers < 1:
        raise ConfigError("PASSWORD_HASH_WORKERS must be a positive integer")
    return AuthConfig(
        initial_admin_email=admin_email,
        initial_admin_password=given("INITIAL_ADMIN_PASSWORD") or DEV_ADMIN_PASSWORD,
        admin_secret_key=given("ADMIN_SECRET_KEY") or DEV_ADMIN_SECRET_KEY,
        jwt_private_key=given("JWT_PRIVATE_KEY"),
        app_base_url=base_url,
        password_reset_url=given("PASSWORD_RESET_URL") or f"{base_url}/reset-password",
        refresh_token_days=refresh_days,
        password_hash_workers=hash_workers,
    )
