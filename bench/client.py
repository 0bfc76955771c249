"""A small HTTP/1.1 keep-alive client for the multi-step scenarios (add, then check out).

The load must cost far less than what it measures: httpx spent about 3.5 ms of CPU per request
here, so a drop driven by it measured the load generator (one busy core of two) more than the
system. This client writes a request and reads the answer on a pooled connection with a few
byte operations, about a tenth of that. It speaks only what the gateway answers:
Content-Length or chunked bodies, keep-alive unless told to close.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit


class ClientError(Exception):
    """The request got no complete answer (connection refused, reset, timed out)."""


class Response:
    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ClientError(f"HTTP {self.status_code}: {self.text[:200]}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """The answer, and whether the connection may be used again."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Response(status, body), headers.get("connection") != "close"

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class Client:
    """Requests to one base URL over up to `max_connections` kept-alive connections."""

    def __init__(self, base_url: str, max_connections: int = 64, timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
    ) -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        body = b"" if json is None else jsonlib.dumps(json).encode()
        if data is not None:
            body = urlencode(data).encode()
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        if json is not None:
            head.append("Content-Type: application/json")
        elif data is not None:
            head.append("Content-Type: application/x-www-form-urlencoded")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        async with self._slots:
            # A kept-alive connection the server closed while idle fails before any answer:
            # the server never saw the request, so it goes once more on a new connection.
            while self._idle:
                try:
                    return await self._send(self._idle.pop(), request)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise ClientError(f"{method} {target}: {exc!r}") from exc
                except ClientError as exc:
                    raise ClientError(f"{method} {target}: {exc}") from exc
            try:
                async with asyncio.timeout(self.timeout):
                    opened = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as exc:
                raise ClientError(f"{method} {target}: {exc!r}") from exc
            try:
                return await self._send(_Connection(*opened), request)
            except (ClientError, asyncio.IncompleteReadError) as exc:
                raise ClientError(f"{method} {target}: {exc!r}") from exc

    async def _send(self, connection: _Connection, request: bytes) -> Response:
        try:
            async with asyncio.timeout(self.timeout):
                response, reusable = await connection.exchange(request)
        except asyncio.IncompleteReadError:
            connection.close()
            raise
        except (OSError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            connection.close()
            raise ClientError(repr(exc)) from exc
        if reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
