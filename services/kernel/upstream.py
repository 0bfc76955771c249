"""Pooled HTTP/1.1 connections to the services: the gateway's, and a service's own internal
calls on a hot path (the catch-up's question to another service, services/kernel/catchup.py).

A small asyncio protocol with the httptools parser (the one uvicorn uses) instead of a general
HTTP client: the proxy path is the gateway's hot loop, and a generic client costs several times
the CPU per request (a catch-up through httpx was about 40 % of resale's CPU on a remembered
marketplace page). It speaks just what our services speak: HTTP/1.1, keep-alive, bodies with
Content-Length or chunked.

Bounded on purpose, so a slow or dead service cannot pile up connections or requests: a small
connect timeout (a dead service is a fast 503), a whole-request timeout, a cap on open
connections per instance (waiting for a slot counts against the request timeout) and a cap on
idle ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httptools
import msgspec

# Methods whose repeat changes nothing more than the first (RFC 9110 §9.2.2).
_REPEATABLE = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class UpstreamError(Exception):
    """The service could not be reached, did not answer in time, or (internal calls)
    answered something else than expected; `status` is its HTTP status if it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Answer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-case
    body: bytes


class _Lost(Exception):
    def __init__(self, answered: bool) -> None:
        super().__init__("connection lost")
        self.answered = answered


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reusable = False
        self._head = False
        self._answered = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(_Lost(self._answered))

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(UpstreamError(f"bad response: {exc}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        if self._head:
            # A HEAD answer announces a length but carries no body: done, and the next
            # answer on this connection needs a parser that is not waiting for that body.
            self.parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive=True)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._head:
            self._finish(self.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self.reusable = keep_alive
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Answer(self._status, self._headers, b"".join(self._body)))

    async def exchange(self, request: bytes, head: bool) -> Answer:
        assert self.transport is not None
        self._head = head
        self._answered = False
        self._status = 0
        self._headers = []
        self._body = []
        self.reusable = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Instance:
    """One running instance of a service: its connection pool."""

    def __init__(
        self,
        base_url: str,
        max_connections: int,
        max_idle: int,
        connect_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.authority = parts.netloc.encode()
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._closed = False

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a name IDNA refuses
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        return conn

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # newest first: least likely closed by the server
            # Uvicorn drops idle keep-alive connections after 5 s; never race it.
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed or conn.closed or not conn.reusable or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def request(
        self, request: bytes, head: bool, timeout_s: float, repeatable: bool = True
    ) -> Answer:
        try:
            async with asyncio.timeout(timeout_s), self._slots:
                for _ in range(2):
                    conn = self._idle_connection()
                    reused = conn is not None
                    if conn is None:
                        conn = await self._open()
                    try:
                        answer = await conn.exchange(request, head)
                    except _Lost as lost:
                        # A kept-alive connection closed with no answer: most likely by the
                        # service before it read the request, so sent once more on a new
                        # one, if it may be repeated. Its worker may also have died after
                        # acting on it: a POST is not sent twice.
                        if reused and not lost.answered and repeatable:
                            continue
                        raise UpstreamError("connection lost") from lost
                    except BaseException:
                        conn.close()
                        raise
                    self._release(conn)
                    return answer
                raise UpstreamError("connection lost twice")
        except TimeoutError as exc:
            raise UpstreamError("timed out") from exc

    def close(self) -> None:
        """Closes the idle connections, and each one in use when its request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def encode_request(
    method: str,
    target: bytes,
    authority: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> bytes:
    parts = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
    return b"".join(parts)


class Upstreams:
    """Every service's instances, picked round-robin per request."""

    def __init__(
        self,
        urls: dict[str, Sequence[str]],
        *,
        connect_timeout_s: float,
        timeout_s: float,
        max_connections: int = 256,
        max_idle: int = 64,
        idle_timeout_s: float = 4.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._instances = {
            name: [
                Instance(u, max_connections, max_idle, connect_timeout_s, idle_timeout_s)
                for u in service_urls
            ]
            for name, service_urls in urls.items()
        }
        self._cycles = {
            name: itertools.cycle(found) for name, found in self._instances.items() if found
        }

    async def send(
        self,
        service: str,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        timeout_s: float | None = None,
        instance: int | None = None,
        repeatable: bool | None = None,
    ) -> Answer:
        """To the next instance of `service` in turn, or to the one numbered `instance` (in
        configuration order). `repeatable`: whether it may be sent twice when a connection is
        lost without an answer (by default, as its method says)."""
        if instance is not None:
            chosen = self._instances[service][instance]
        elif (instances := self._cycles.get(service)) is not None:
            chosen = next(instances)
        else:
            raise UpstreamError(f"no instance of {service} is configured")
        request = encode_request(method, target, chosen.authority, headers, body)
        return await chosen.request(
            request,
            method == "HEAD",
            timeout_s or self.timeout_s,
            method in _REPEATABLE if repeatable is None else repeatable,
        )

    def count(self, service: str) -> int:
        """How many instances of `service` are configured."""
        return len(self._instances.get(service, ()))

    async def get_json(
        self,
        service: str,
        target: str,
        timeout_s: float | None = None,
        type_: Any = Any,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> Any:
        """An internal GET whose 200 answer is JSON (of `type_`); else an UpstreamError."""
        answer = await self.send(service, "GET", target.encode(), headers, timeout_s=timeout_s)
        return _json_answer(service, target, answer, type_)

    async def post_json(
        self,
        service: str,
        target: str,
        body: Any,
        timeout_s: float | None = None,
        type_: Any = Any,
    ) -> Any:
        """An internal POST of `body` as JSON whose 200 answer is JSON (of `type_`); else an
        UpstreamError. Internal POSTs are made to be repeated (a wait for events, a limit
        conditional on its revision), so one lost with its connection is sent once more."""
        headers = [(b"content-type", b"application/json")]
        encoded = msgspec.json.encode(body)
        answer = await self.send(
            service, "POST", target.encode(), headers, encoded, timeout_s, repeatable=True
        )
        return _json_answer(service, target, answer, type_)

    def close(self) -> None:
        for instances in self._instances.values():
            for instance in instances:
                instance.close()


def _json_answer(service: str, target: str, answer: Answer, type_: Any) -> Any:
    if answer.status != 200:
        raise UpstreamError(f"{service} {target} answered {answer.status}", answer.status)
    try:
        return msgspec.json.decode(answer.body, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamError(f"{service} {target}: unexpected answer ({exc})") from exc
