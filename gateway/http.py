"""The raw ASGI pieces the gateway answers with: one pass over the request headers, and a
reply that always carries X-Request-ID and the CORS headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from gateway.observe import OWN
from services.kernel.app import MAX_BODY_BYTES

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_JSON = (b"content-type", b"application/json")
_BEARER = (b"www-authenticate", b"Bearer")


class RequestHeaders:
    """The request headers the gateway itself reads."""

    __slots__ = (
        "authorization",
        "content_length",
        "cors_headers",
        "cors_method",
        "forwarded_for",
        "origin",
        "request_id",
        "size",
    )

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self.authorization: bytes | None = None
        self.origin: bytes | None = None
        self.request_id: bytes | None = None
        self.forwarded_for: str | None = None
        self.cors_method: bytes | None = None
        self.cors_headers: bytes | None = None
        self.content_length: bytes | None = None
        # Bytes of every name and value (what the header limits of GatewayConfig bound).
        self.size = 0
        for name, value in raw:
            self.size += len(name) + len(value)
            if name == b"authorization":
                # A second one reads as none that is valid: the hops would not agree on which
                # to read (the last here, the first in a service), so neither is trusted.
                self.authorization = value if self.authorization is None else b""
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"origin":
                self.origin = value
            elif name == b"x-forwarded-for":
                self.forwarded_for = value.decode("latin-1")
            elif name == b"access-control-request-method":
                self.cors_method = value
            elif name == b"access-control-request-headers":
                self.cors_headers = value
            elif name == b"content-length":
                self.content_length = value

    def declares_too_large(self) -> bool:
        """A Content-Length over the limit: refused before a byte of the body is read (so a
        client that sent `Expect: 100-continue` is not told to send it)."""
        declared = self.content_length
        if declared is None or not declared.isdigit():
            return False
        digits = declared.lstrip(b"0")
        return len(digits) > len(str(MAX_BODY_BYTES)) or int(digits or b"0") > MAX_BODY_BYTES


class Reply:
    __slots__ = ("_extra", "_send", "request_id", "route", "status")

    def __init__(self, send: Send, request_id: bytes, cors: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self.request_id = request_id
        self._extra = [(b"x-request-id", request_id), *cors]
        self.route = OWN  # what the metrics count it under (gateway.observe)
        self.status = 0  # as answered (0: not answered)

    async def send(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        length: bool = True,
    ) -> None:
        if length:
            headers.append((b"content-length", str(len(body)).encode()))
        headers += self._extra
        self.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def json(
        self, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.send(status, [_JSON, *headers], msgspec.json.encode(body))

    async def unauthorized(self, detail: str) -> None:
        await self.json(401, {"detail": detail}, [_BEARER])

    async def text(
        self, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.send(
            status, [(b"content-type", b"text/plain; charset=utf-8"), *headers], text.encode()
        )


def peer_of(scope: dict[str, Any]) -> str:
    """The connecting address ("unknown" when the server did not say)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientGone(Exception):
    """The client went away before its request's body was whole: nothing is forwarded (a
    request cut short would otherwise reach the service as if it were complete)."""


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it exceeds 1 MiB; ClientGone if the client left
    before its end."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
