"""A request cut off by a shutdown past its grace is answered 503 in JSON (API.md §1.2), not
with the server's plain-text 500; one whose answer had begun is left to the server to close."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.kernel.app import AnsweredFromMemory


class Stalled:
    """An app whose request is cancelled (uvicorn's shutdown), after its answer began or not."""

    def __init__(self, began: bool) -> None:
        self.began = began

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.began:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise asyncio.CancelledError


class Server:
    """What uvicorn's `send` allows: one start, then the body."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and self.messages:
            raise RuntimeError("Unexpected ASGI message 'http.response.start'")
        self.messages.append(message)


SCOPE = {"type": "http", "method": "POST", "headers": [(b"x-request-id", b"req-123")]}


async def test_a_request_cut_off_before_its_answer_gets_a_json_503() -> None:
    server = Server()
    with pytest.raises(asyncio.CancelledError):  # still cancelled: the server ends the task
        await AnsweredFromMemory(Stalled(began=False))(SCOPE, None, server)  # type: ignore[arg-type]
    start, body = server.messages
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"req-123"
    assert json.loads(body["body"]) == {"detail": "Service unavailable"}
    assert int(headers[b"content-length"]) == len(body["body"])


async def test_a_request_cut_off_after_its_answer_began_sends_nothing_more() -> None:
    server = Server()
    with pytest.raises(asyncio.CancelledError):
        await AnsweredFromMemory(Stalled(began=True))(SCOPE, None, server)  # type: ignore[arg-type]
    assert [m["status"] for m in server.messages] == [200]
