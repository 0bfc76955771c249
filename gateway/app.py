"""The gateway: the one public entry point (ARCHITECTURE.md §6), a raw ASGI app.

`/`, `/health`, `/ready`, `/metrics`, `/docs` and `/docs/openapi.json` are its own; everything
under `/api` goes through gateway.edge to the services. No framework on this path: it is the hot
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from time import perf_counter
from typing import Any
from urllib.parse import unquote

from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send

from gateway import config as config_mod
from gateway.bus import DenyListFollower
from gateway.cors import Cors
from gateway.denylist import DenyList
from gateway.edge import proxy
from gateway.http import Reply, RequestHeaders, peer_of
from gateway.observe import UNROUTED, Exposition, Readiness, Traffic
from gateway.openapi import DOCS_PAGE, MergedDocument
from gateway.ratelimit import RateLimiter
from gateway.routes import without_trailing_slash
from services.kernel import broker
from services.kernel import settings as settings_mod
from services.kernel.app import valid_request_id
from services.kernel.logs import configure
from services.kernel.settings import SERVICES
from services.kernel.tokens import TokenVerifier
from services.kernel.upstream import Upstreams

log = logging.getLogger("resellio.gateway")
_READ_ONLY = [(b"allow", b"GET, HEAD")]
_OWN_PATHS = frozenset({"/", "/health", "/ready", "/metrics", "/docs", "/docs/openapi.json"})
HEADERS_TOO_LARGE = "Request header fields too large"


class Gateway:
    def __init__(self, settings: settings_mod.Settings, config: config_mod.GatewayConfig):
        self.settings = settings
        self.config = config
        self.cors = Cors(config.cors_origins)
        self.limiter = RateLimiter(config.rate_limits, config.exempt(), config.proxies())
        self.denylist = DenyList()
        self.verifier = TokenVerifier(self._jwks, settings.jwt_issuer, settings.jwt_audience)
        self.metrics_from = config.metrics_from()
        self.traffic = Traffic(gauges=self._gauges)
        self.exposition = Exposition(self.traffic)
        self.upstreams: Upstreams
        self.readiness: Readiness
        self.follower: DenyListFollower
        self.docs: MergedDocument
        self._housekeeping: asyncio.Task[None] | None = None

    async def _jwks(self) -> dict[str, Any]:
        document = await self.upstreams.get_json("auth", "/api/auth/.well-known/jwks.json", 5.0)
        return document if isinstance(document, dict) else {}

    # ---- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = perf_counter()
        reply = await self._answer(scope, receive, send)
        self.traffic.observe(reply.route, scope["method"], reply.status, perf_counter() - started)

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any) -> Reply:
        h = RequestHeaders(scope["headers"])
        if len(scope["headers"]) > self.config.max_header_count or (
            h.size > self.config.max_header_bytes
        ):
            request_id = str(uuid.uuid4()).encode()  # theirs is not worth reading
            reply = Reply(send, request_id, self.cors.response_headers(h.origin))
            await reply.json(431, {"detail": HEADERS_TOO_LARGE})
            return reply
        incoming = h.request_id
        if incoming is not None and valid_request_id(incoming.decode("latin-1")):
            request_id = incoming
        else:
            request_id = str(uuid.uuid4()).encode()
        method = scope["method"]
        if method == "OPTIONS" and h.origin and h.cors_method:
            reply = Reply(send, request_id, self.cors.preflight_headers(h.origin, h.cors_headers))
            await reply.send(204, [], b"")
            return reply
        reply = Reply(send, request_id, self.cors.response_headers(h.origin))
        path: str = scope["path"]
        try:
            api = path.lstrip("/")  # "//api/events" is routed as "/api//events" is (proxy)
            if api.startswith("api/") or api == "api":
                await proxy(self, scope, receive, reply, h)
            else:
                await self._own(path, method, reply, scope, h)
        except Exception:
            log.exception("gateway: unexpected error on %s %s", method, path)
            await reply.json(500, {"detail": "Internal server error"})
        return reply

    async def _own(
        self, path: str, method: str, reply: Reply, scope: dict[str, Any], h: RequestHeaders
    ) -> None:
        """The gateway's own read-only pages. `/metrics` is answered only to a scraper
        connecting from GATEWAY_METRICS_NETWORKS itself (no proxy in between): to anyone
        else it does not exist."""
        path = without_trailing_slash(path)
        if path == "/metrics" and (
            h.forwarded_for is not None or peer_of(scope) not in self.metrics_from
        ):
            path = ""
        if path not in _OWN_PATHS:
            reply.route = UNROUTED
            await reply.json(404, {"detail": "Not Found"})
            return
        if method not in ("GET", "HEAD"):
            await reply.json(405, {"detail": "Method Not Allowed"}, _READ_ONLY)
            return
        if path == "/":
            await reply.text(200, "API Gateway is up")
        elif path == "/health":
            await reply.text(200, "API Gateway is healthy")
        elif path == "/ready":
            checks = await self.readiness.checks()
            ready = all(state == "ok" for state in checks.values())
            await reply.json(200 if ready else 503, checks)
        elif path == "/metrics":
            body, content_type = self.exposition.render()
            await reply.send(200, [(b"content-type", content_type.encode())], body)
        elif path == "/docs":
            await reply.send(200, [(b"content-type", b"text/html; charset=utf-8")], DOCS_PAGE)
        else:
            await reply.json(200, await self.docs.get())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("gateway: start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        self.upstreams = Upstreams(
            {name: self.settings.urls_of(name) for name in SERVICES},
            connect_timeout_s=self.config.connect_timeout_s,
            timeout_s=self.config.request_timeout_s,
            max_connections=self.config.max_connections_per_instance,
        )
        self.docs = MergedDocument(self.upstreams, SERVICES)
        self.readiness = Readiness(self.upstreams, SERVICES, lambda: self.denylist.loaded)
        self.follower = DenyListFollower(
            self.denylist,
            self.upstreams,
            self.settings.amqp_url,
            broker.Names(self.settings.broker_prefix),
        )
        await self.follower.start(self.config.denylist_startup_wait_s)
        self._housekeeping = asyncio.create_task(self._tidy())

    def _gauges(self) -> dict[str, float]:
        return {
            "banned_users": len(self.denylist.banned),
            "revoked_tokens": len(self.denylist.revoked),
            "deny_list_loaded": float(self.denylist.loaded),
        }

    async def _tidy(self) -> None:
        """Forget what can no longer matter: expired revocations, idle rate-limit keys."""
        while True:
            await asyncio.sleep(30)
            self.denylist.forget_expired()
            self.limiter.sweep(time.monotonic())

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.follower.stop()
        self.upstreams.close()


def create_app(
    settings: settings_mod.Settings | None = None,
    config: config_mod.GatewayConfig | None = None,
) -> Litestar:
    """The gateway as a litestar application whose one route, mounted at the root, is the raw
    ASGI edge: litestar owns the process (lifespan, server integration), the hot path stays
    free of per-request framework work."""
    settings = settings or settings_mod.load()
    configure("gateway", settings.log_level)
    gateway = Gateway(settings, config or config_mod.load())

    @asgi("/", is_mount=True, copy_scope=False)
    async def edge(scope: Scope, receive: Receive, send: Send) -> None:
        # A root mount rewrites scope["path"]; the edge routes on the request's own path.
        scope["path"] = unquote(scope["raw_path"].decode("latin-1"))
        await gateway._http(scope, receive, send)  # type: ignore[arg-type]

    app = Litestar(
        route_handlers=[edge],
        on_startup=[gateway.start],
        on_shutdown=[gateway.stop],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.gateway = gateway
    return app
