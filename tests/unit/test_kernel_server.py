"""The HTTP server's own 400 (a request it cannot parse), in JSON, on the uvicorn locked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from services.kernel.server import JsonErrorsProtocol


class Wire(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.sent += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_a_request_it_cannot_parse_is_answered_in_json_and_the_connection_closed() -> None:
    config = Config(_app, http=JsonErrorsProtocol, server_header=False, log_config=None)
    config.load()
    state = ServerState()
    protocol = JsonErrorsProtocol(config, state, {})
    wire = Wire()
    protocol.connection_made(wire)
    protocol.data_received(b"NOT A REQUEST\r\n\r\n")
    head, _, body = wire.sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"content-type: application/json" in head and b"x-request-id: " in head
    assert json.loads(body) == {"detail": "Invalid HTTP request received."}
    assert wire.closed
