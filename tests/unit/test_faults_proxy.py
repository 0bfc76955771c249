"""The fault-injection proxy itself: forwards, then refuses while cut, then forwards again."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.faults import CuttableProxy


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4), 2)
    writer.close()
    return data


async def test_proxy_forwards_refuses_when_cut_and_recovers() -> None:
    server, port = await _echo_server()
    proxy = CuttableProxy("127.0.0.1", port).start()
    try:
        assert await _roundtrip(proxy.port) == b"ping"
        proxy.cut()
        with pytest.raises(OSError):
            await _roundtrip(proxy.port)
        proxy.restore()
        assert await _roundtrip(proxy.port) == b"ping"
    finally:
        proxy.stop()
        server.close()
