"""Typed settings, read from the environment once and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

SERVICES = ("auth", "catalog", "ordering", "resale")
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/resellio"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_PORTS = {"gateway": 8080, "auth": 8001, "catalog": 8002, "ordering": 8003, "resale": 8004}


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and what to do."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    environment: str = "production"
    database_url: str = DEFAULT_DATABASE_URL
    amqp_url: str = DEFAULT_AMQP_URL
    # Names every exchange and queue, so test runs never see another run's messages.
    broker_prefix: str = "resellio"
    service_urls: dict[str, str] = {}
    # Per-service connection strings (each service's own least-privilege role in deploy);
    # a service without one uses database_url.
    service_database_urls: dict[str, str] = {}
    jwt_issuer: str = "resellio-auth"
    jwt_audience: str = "resellio-api"
    access_token_minutes: int = 30
    consumer_retry_delays_ms: tuple[int, ...] = (500, 2000, 10000)
    log_level: str = "INFO"
    db_pool_size: int = 8
    # Per-service pool sizes (RESELLIO_<SERVICE>_DB_POOL_SIZE); the others use db_pool_size.
    service_pool_sizes: dict[str, int] = {}
    # How long a service waits for another service's events before answering (API.md §1.8).
    catch_up_timeout_s: float = 3.0
    # Public read answers kept in memory until their tables change (services/kernel/answers.py).
    answer_cache: bool = True
    # Each service publishes its own outbox from its own event loop; off when `resellio relay`
    # runs the relays in a process of their own (RESELLIO_RELAY=external).
    relay_inline: bool = True
    # The least time between two batches of a relay while events keep coming
    # (services/kernel/relay.py): under load, fewer and larger batches; after a quiet moment,
    # no wait at all. It bounds what it adds to an event's way to its consumers.
    relay_batch_interval_ms: int = 25

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @property
    def max_delivery_attempts(self) -> int:
        return len(self.consumer_retry_delays_ms) + 1

    def database_url_for(self, service: str) -> str:
        return self.service_database_urls.get(service, self.database_url)

    def db_pool_size_for(self, service: str) -> int:
        return self.service_pool_sizes.get(service, self.db_pool_size)

    def urls_of(self, service: str) -> list[str]:
        """Every instance of a service (RESELLIO_<SERVICE>_URL may list several, comma-separated)."""
        return [u.strip().rstrip("/") for u in self.service_urls[service].split(",") if u.strip()]

    def url_of(self, service: str) -> str:
        return self.urls_of(service)[0]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be 'on' or 'off', got {raw!r}")


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    environment = env.get("ENVIRONMENT", "production").strip().lower()
    if environment not in ("production", "development"):
        raise ConfigError("ENVIRONMENT must be 'production' or 'development'")
    urls = {}
    for name, port in DEFAULT_PORTS.items():
        urls[name] = env.get(f"RESELLIO_{name.upper()}_URL", f"http://127.0.0.1:{port}").rstrip("/")
    delays = env.get("CONSUMER_RETRY_DELAYS_MS")
    retry = tuple(int(x) for x in delays.split(",") if x.strip()) if delays else (500, 2000, 10000)
    return Settings(
        environment=environment,
        database_url=env.get("RESELLIO_DATABASE_URL", DEFAULT_DATABASE_URL),
        amqp_url=env.get("RESELLIO_AMQP_URL", DEFAULT_AMQP_URL),
        broker_prefix=env.get("RESELLIO_BROKER_PREFIX", "resellio"),
        service_urls=urls,
        service_database_urls={
            name: env[f"RESELLIO_{name.upper()}_DATABASE_URL"]
            for name in SERVICES
            if env.get(f"RESELLIO_{name.upper()}_DATABASE_URL")
        },
        jwt_issuer=env.get("JWT_ISSUER", "resellio-auth"),
        jwt_audience=env.get("JWT_AUDIENCE", "resellio-api"),
        access_token_minutes=_int(env, "ACCESS_TOKEN_EXPIRE_MINUTES", 30),
        consumer_retry_delays_ms=retry,
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        db_pool_size=_int(env, "RESELLIO_DB_POOL_SIZE", 8),
        service_pool_sizes={
            name: _int(env, f"RESELLIO_{name.upper()}_DB_POOL_SIZE", 8)
            for name in SERVICES
            if env.get(f"RESELLIO_{name.upper()}_DB_POOL_SIZE")
        },
        catch_up_timeout_s=float(env.get("CATCH_UP_TIMEOUT_S", "3.0")),
        answer_cache=_switch(env, "ANSWER_CACHE", True),
        relay_inline=_relay_inline(env),
        relay_batch_interval_ms=_int(env, "RESELLIO_RELAY_BATCH_INTERVAL_MS", 25),
    )


def _relay_inline(env: Mapping[str, str]) -> bool:
    raw = env.get("RESELLIO_RELAY", "inline").strip().lower() or "inline"
    if raw not in ("inline", "external"):
        raise ConfigError(f"RESELLIO_RELAY must be 'inline' or 'external', got {raw!r}")
    return raw == "inline"
