"""The pooled HTTP/1.1 client (the gateway's, and the services' catch-up's) against a plain socket
server (no services needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from services.kernel.upstream import UpstreamError, Upstreams


def upstreams(port: int, **options: float) -> Upstreams:
    return Upstreams(
        {"svc": [f"http://127.0.0.1:{port}"]},
        connect_timeout_s=0.5,
        timeout_s=options.get("timeout_s", 2.0),
        idle_timeout_s=options.get("idle_timeout_s", 4.0),
    )


OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
JSON_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
JSON_OK += b'{"ok":true}'
CHUNKED = (
    b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-thing: 1\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
)


def in_turn(*replies: bytes | None) -> Callable[[bytes], bytes | None]:
    """Answers the n-th request with the n-th reply, the last one after that; None closes the
    connection instead."""
    calls = 0

    def answer(_: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        return replies[min(calls, len(replies)) - 1]

    return answer


async def test_keep_alive_connections_are_reused(serve: Callable) -> None:
    server = await serve(lambda _: OK)
    pool = upstreams(server.port)
    for _ in range(5):
        answer = await pool.send("svc", "GET", b"/x?y=1", [(b"x-request-id", b"r1")])
        assert answer.status == 200 and answer.body == b"ok"
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /x?y=1 HTTP/1.1\r\n")
    assert b"x-request-id: r1\r\n" in server.requests[0]
    pool.close()


async def test_chunked_bodies_are_joined_and_headers_kept(serve: Callable) -> None:
    server = await serve(lambda _: CHUNKED)
    pool = upstreams(server.port)
    answer = await pool.send("svc", "POST", b"/", body=b'{"a":1}')
    assert (answer.status, answer.body) == (201, b"abcde")
    assert (b"x-thing", b"1") in answer.headers
    assert server.requests[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')
    pool.close()


async def test_head_answers_end_at_the_headers(serve: Callable) -> None:
    server = await serve(
        lambda r: OK.replace(b"\r\n\r\nok", b"\r\n\r\n") if r.startswith(b"HEAD") else OK
    )
    pool = upstreams(server.port)
    head = await pool.send("svc", "HEAD", b"/")
    assert (head.status, head.body) == (200, b"")
    after = await pool.send("svc", "GET", b"/")  # same connection, parser not confused
    assert (after.status, after.body) == (200, b"ok")
    assert server.connections == 1
    pool.close()


async def test_a_connection_the_service_closed_is_retried_on_a_new_one(serve: Callable) -> None:
    # Every second request finds its connection closing.
    server = await serve(in_turn(OK, None, OK, None, OK))
    pool = upstreams(server.port)
    for _ in range(3):
        assert (await pool.send("svc", "GET", b"/")).status == 200
    pool.close()


async def test_a_dead_service_fails_fast(serve: Callable) -> None:
    server = await serve(lambda _: OK)
    port = server.port
    server.server.close()
    await server.server.wait_closed()
    pool = upstreams(port)
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        await pool.send("svc", "GET", b"/")
    assert time.monotonic() - started < 0.5


async def test_a_silent_service_times_out(serve: Callable) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    silent = await asyncio.start_server(never, "127.0.0.1", 0)
    pool = upstreams(silent.sockets[0].getsockname()[1], timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        await pool.send("svc", "GET", b"/")
    assert time.monotonic() - started < 1.0
    silent.close()


async def test_a_service_without_instances_or_a_bad_name_is_an_upstream_error() -> None:
    pool = Upstreams(
        {"none": [], "bad": [f"http://{'x' * 70}.example:80"]}, connect_timeout_s=0.5, timeout_s=1
    )
    for service in ("none", "bad", "unknown"):
        with pytest.raises(UpstreamError):
            await pool.send(service, "GET", b"/")
    pool.close()


async def test_a_request_that_ends_after_close_does_not_keep_its_connection(
    serve: Callable,
) -> None:
    release = asyncio.Event()
    server = await serve(lambda _: OK)
    pool = upstreams(server.port)

    async def slow_request() -> int:
        sending = asyncio.create_task(pool.send("svc", "GET", b"/"))
        await release.wait()
        return (await sending).status

    pending = asyncio.create_task(slow_request())
    await asyncio.sleep(0)
    pool.close()  # the instance stops while the request is on its way
    release.set()
    assert await pending == 200
    assert (await pool.send("svc", "GET", b"/")).status == 200  # still answers, unpooled
    assert server.connections == 2  # the first connection was closed, not kept idle


async def test_a_post_whose_connection_was_lost_without_an_answer_is_not_sent_again(
    serve: Callable,
) -> None:
    """The service may have acted on it before its connection went (a worker that died after
    its commit): only a request that may be repeated (GET, HEAD, PUT, DELETE) is sent again."""
    server = await serve(in_turn(OK, None))
    pool = upstreams(server.port)
    assert (await pool.send("svc", "POST", b"/x", body=b"{}")).status == 200
    with pytest.raises(UpstreamError):
        await pool.send("svc", "POST", b"/x", body=b"{}")
    assert len(server.requests) == 2
    pool.close()


async def test_an_internal_post_made_to_be_repeated_is_sent_again(serve: Callable) -> None:
    """post_json's callers (a wait for events, a limit conditional on its revision) may be
    repeated: one lost with a kept-alive connection goes once more on a new one."""
    server = await serve(in_turn(JSON_OK, None, JSON_OK))
    pool = upstreams(server.port)
    assert await pool.post_json("svc", "/internal/x", {"a": 1}) == {"ok": True}
    assert await pool.post_json("svc", "/internal/x", {"a": 1}) == {"ok": True}
    assert len(server.requests) == 3
    pool.close()
