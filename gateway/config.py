"""The gateway's own settings, read from the environment once (next to the kernel Settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from gateway.ratelimit import LIMIT_DEFAULTS, Limit, Networks, parse_limit
from services.kernel.settings import ConfigError

LOOPBACK = "127.0.0.0/8,::1/128"
DEV_CORS_ORIGINS = "http://localhost:3000,http://localhost:5173,http://127.0.0.1:3000"


class GatewayConfig(msgspec.Struct, kw_only=True, frozen=True):
    connect_timeout_s: float = 0.5
    request_timeout_s: float = 30.0
    # How long the composed event page waits for ordering's and resale's parts.
    part_timeout_s: float = 1.0
    max_connections_per_instance: int = 256
    cors_origins: tuple[str, ...] = ()
    rate_limits: dict[str, Limit | None] = {}
    exempt_networks: str = ""
    trusted_proxies: str = ""
    # Who may scrape /metrics (connecting directly, not through a proxy).
    metrics_networks: str = LOOPBACK
    # Start-up waits this long for auth's deny-list before serving without it (then retries).
    denylist_startup_wait_s: float = 10.0
    # How long the answer to a password change waits for auth's deny-list to be read again.
    denylist_refresh_wait_s: float = 2.0
    # Header limits: more header fields, or more bytes of names and values in all, is a 431
    # "Request header fields too large" before anything else (the server itself has no limit,
    # and every header would be forwarded to the services). Browsers send ~20 fields, a few KiB.
    max_header_count: int = 100
    max_header_bytes: int = 32 * 1024

    def exempt(self) -> Networks:
        return Networks(self.exempt_networks)

    def proxies(self) -> Networks:
        return Networks(self.trusted_proxies)

    def metrics_from(self) -> Networks:
        return Networks(self.metrics_networks)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc


def load(env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    development = env.get("ENVIRONMENT", "production").strip().lower() == "development"
    limits_on = env.get("RATE_LIMITS", "on").strip().lower() not in ("off", "0", "false", "no")
    limits: dict[str, Limit | None] = {}
    for name, default in LIMIT_DEFAULTS.items():
        variable = f"RATE_LIMIT_{name.upper()}"
        limits[name] = parse_limit(env.get(variable, default), variable) if limits_on else None
    origins = env.get("CORS_ALLOWED_ORIGINS", DEV_CORS_ORIGINS if development else "")
    config = GatewayConfig(
        connect_timeout_s=_float(env, "GATEWAY_CONNECT_TIMEOUT_S", 0.5),
        request_timeout_s=_float(env, "GATEWAY_REQUEST_TIMEOUT_S", 30.0),
        part_timeout_s=_float(env, "GATEWAY_PART_TIMEOUT_S", 1.0),
        max_connections_per_instance=int(_float(env, "GATEWAY_MAX_CONNECTIONS", 256)),
        cors_origins=tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip()),
        rate_limits=limits,
        exempt_networks=env.get("RATE_LIMIT_EXEMPT_NETWORKS", LOOPBACK if development else ""),
        trusted_proxies=env.get("TRUSTED_PROXIES", ""),
        metrics_networks=env.get("GATEWAY_METRICS_NETWORKS", LOOPBACK),
        denylist_startup_wait_s=_float(env, "DENYLIST_STARTUP_WAIT_S", 10.0),
        denylist_refresh_wait_s=_float(env, "DENYLIST_REFRESH_WAIT_S", 2.0),
        max_header_count=int(_float(env, "GATEWAY_MAX_HEADER_COUNT", 100)),
        max_header_bytes=int(_float(env, "GATEWAY_MAX_HEADER_BYTES", 32 * 1024)),
    )
    (
        config.exempt(),
        config.proxies(),
        config.metrics_from(),
    )  # fail at start-up on a malformed network
    return config
