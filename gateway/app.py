"""The gateway: the one public entry point. Routes /api/* to the services."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
from litestar import Litestar, MediaType, Response, asgi, get
from litestar.types import Receive, Scope, Send

from gateway.proxy import HOP_BY_HOP, Upstreams
from gateway.routes import service_for
from services.kernel import settings as settings_mod
from services.kernel.app import EXCEPTION_HANDLERS, MAX_BODY_BYTES, valid_request_id
from services.kernel.logs import configure
from services.kernel.settings import SERVICES


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    payload = msgspec.json.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it exceeds the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@asgi("/api", is_mount=True, copy_scope=False)
async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
    upstreams: Upstreams = scope["app"].state.upstreams
    incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    request_id = incoming if valid_request_id(incoming) else str(uuid.uuid4())
    rid = [(b"x-request-id", request_id.encode())]
    path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
    path = path.split("?", 1)[0]
    service = service_for(path)
    if service is None:
        await _send_json(send, 404, {"detail": "Not Found"}, rid)
        return
    body = await _read_body(receive)
    if body is None:
        await _send_json(send, 413, {"detail": "Request body too large"}, rid)
        return
    query = scope.get("query_string", b"").decode("latin-1")
    client = scope.get("client")
    headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
    headers += [(b"x-request-id", request_id.encode())]
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    try:
        response = await upstreams.forward(
            service, scope["method"], path + (f"?{query}" if query else ""), headers, body
        )
    except httpx.HTTPError:
        await _send_json(send, 503, {"detail": "Service unavailable"}, rid)
        return
    out = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers.multi_items()
        if k.lower().encode("latin-1") not in HOP_BY_HOP and k.lower() != "x-request-id"
    ]
    content = response.content
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [*out, (b"content-length", str(len(content)).encode()), *rid],
        }
    )
    await send({"type": "http.response.body", "body": content})


@get("/", media_type=MediaType.TEXT, include_in_schema=False, sync_to_thread=False)
def root() -> str:
    return "API Gateway is up"


@get("/health", media_type=MediaType.TEXT, include_in_schema=False, sync_to_thread=False)
def health() -> str:
    return "API Gateway is healthy"


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    configure("gateway", settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.upstreams = Upstreams(
            {name: settings.urls_of(name) for name in SERVICES}, timeout_s=10.0
        )
        try:
            yield
        finally:
            await app.state.upstreams.close()

    return Litestar(
        route_handlers=[root, health, proxy],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        debug=False,
        logging_config=None,
        openapi_config=None,
    )


__all__ = ["Response", "create_app"]
