"""The benchmark's own instruments: what a stretch of work cost each part of the machine, and
the load generator's HTTP client against a real server (lengths, chunks, a closed
connection). A benchmark that misreads either reports numbers that are not true."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from bench.client import Client
from bench.measure import machine_cpu, process_cpu

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def test_process_cpu_counts_each_named_process_and_its_instances_under_one_name() -> None:
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    named = {burners[0].pid: "burner", burners[1].pid: "burner#1", os.getpid(): "me"}
    before = process_cpu(named)
    # Read again while both still run: an exited process is no longer counted.
    while True:
        during = process_cpu(named)
        if during["burner"] - before.get("burner", 0.0) >= 0.6:
            break
        assert all(b.poll() is None for b in burners), "the burners exited before the reading"
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # let them run a while
    # "other" is the machine's busy time the named and found processes do not account for:
    # read at once, before whatever else runs on the machine adds to it.
    busy = machine_cpu()[0]
    for b in burners:
        b.wait()
    assert "burner#1" not in during
    assert during["me"] >= before["me"]
    assert sum(during.values()) == pytest.approx(busy, abs=0.5)


async def test_process_cpu_finds_the_local_postgresql_backends() -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    from services.kernel.migrate import ensure_database
    from tests.support.infra import database_url

    url = make_url(database_url())
    host = str(url.query.get("host") or url.host or "127.0.0.1")
    if not host.startswith("/") and host not in ("127.0.0.1", "localhost"):
        pytest.skip("PostgreSQL is not on this machine")
    await ensure_database(url.render_as_string(hide_password=False))
    conn = await asyncpg.connect(
        host=host, port=url.port, user=url.username, password=url.password, database=url.database
    )
    try:
        before = process_cpu({})
        await conn.fetchval("SELECT sum(sqrt(g)) FROM generate_series(1, 6000000) g")
        after = process_cpu({})
    finally:
        await conn.close()
    # The query's CPU seconds, counted as PostgreSQL's (its backend found by command line).
    assert after["postgresql"] - before.get("postgresql", 0.0) >= 0.2


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        path = head.split(b" ")[1]
        if path == b"/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
            )
        elif path == b"/close":
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
            )
            await writer.drain()
            break
        else:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        await writer.drain()
    writer.close()


@pytest.fixture
async def client() -> AsyncIterator[tuple[Client, list[int]]]:
    """The load generator's client (one connection at most) on a real server, and the
    connections that server accepted."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await _serve(reader, writer)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        client = Client(f"http://127.0.0.1:{port}", max_connections=1)
        try:
            yield client, connections
        finally:
            await client.aclose()


async def test_client_reads_lengths_and_chunks_and_keeps_the_connection(
    client: tuple[Client, list[int]],
) -> None:
    http, connections = client
    echoed = await http.post("/echo", json={"a": [1, 2]})
    chunked = await http.get("/chunked")
    again = await http.post("/echo", data={"q": "x y"})
    assert (echoed.status_code, echoed.json()) == (201, {"a": [1, 2]})
    assert (chunked.status_code, chunked.text) == (200, "hello, world")
    assert again.content == b"q=x+y"
    assert len(connections) == 1  # all three on one kept-alive connection


async def test_client_opens_a_new_connection_after_the_server_closed_one(
    client: tuple[Client, list[int]],
) -> None:
    http, connections = client
    closed = await http.get("/close")
    after = await http.post("/echo", json={})
    assert (closed.status_code, closed.text) == (404, "no")
    assert (after.status_code, after.json()) == (201, {})
    assert len(connections) == 2
