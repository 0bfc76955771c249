"""The gateway forwards a request only once its body is whole (API.md §1.2: a failed request
changes nothing): a client that goes away part-way sent nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.http import MAX_BODY_BYTES, ClientGone, read_body


def messages(*sent: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    queue = list(sent)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


async def test_a_body_in_parts_is_joined() -> None:
    receive = messages(
        {"type": "http.request", "body": b'{"message":', "more_body": True},
        {"type": "http.request", "body": b'"hi"}', "more_body": False},
    )
    assert await read_body(receive) == b'{"message":"hi"}'


@pytest.mark.parametrize(
    "sent",
    [
        [{"type": "http.disconnect"}],
        [
            {"type": "http.request", "body": b'{"message":', "more_body": True},
            {"type": "http.disconnect"},
        ],
    ],
)
async def test_a_client_gone_before_the_end_of_its_body_sent_nothing(
    sent: list[dict[str, Any]],
) -> None:
    with pytest.raises(ClientGone):
        await read_body(messages(*sent))


async def test_a_body_over_the_limit_is_refused() -> None:
    receive = messages(
        {"type": "http.request", "body": b"x" * MAX_BODY_BYTES, "more_body": True},
        {"type": "http.request", "body": b"x", "more_body": False},
    )
    assert await read_body(receive) is None
