"""`applied_by`: a write answered once its consumers applied its events, whatever its size."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import msgspec

from services.kernel.app import WRITTEN_MAX, Written, applied_by
from services.kernel.validation import parse_json


class Asked:
    """The internal calls made, each checked as the consumer's endpoint reads its body."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def post_json(self, service: str, target: str, body: Any, timeout: float) -> Any:
        parse_json(msgspec.json.encode(body), Written, empty_ok=True)  # a 422 otherwise
        self.calls.append((service, target, body))
        return {"caught_up": True}


def _runtime(asked: Asked) -> Any:
    return SimpleNamespace(
        service="catalog",
        settings=SimpleNamespace(catch_up_timeout_s=3.0),
        catch_up=SimpleNamespace(upstreams=asked),
    )


async def test_the_events_written_are_named_to_each_consumer() -> None:
    asked = Asked()
    written = [(uuid.uuid4(), "catalog.EventUpdated") for _ in range(2)]
    await applied_by(_runtime(asked), SimpleNamespace(written=written), ("ordering", "resale"))
    named = {"events": [[str(i), t] for i, t in written]}
    assert sorted(asked.calls) == [
        ("ordering", "/internal/catch-up/catalog", named),
        ("resale", "/internal/catch-up/catalog", named),
    ]


async def test_more_events_than_a_request_names_wait_for_everything_committed() -> None:
    """A venue of a thousand events renamed: the request would be a 422 (and the rename
    answered at once); it asks for every event catalog had committed instead."""
    asked = Asked()
    written = [(uuid.uuid4(), "catalog.EventUpdated") for _ in range(WRITTEN_MAX + 1)]
    await applied_by(_runtime(asked), SimpleNamespace(written=written), ("ordering",))
    assert asked.calls == [("ordering", "/internal/catch-up/catalog", {})]


async def test_nothing_written_asks_nothing() -> None:
    asked = Asked()
    await applied_by(_runtime(asked), SimpleNamespace(written=[]), ("ordering",))
    assert asked.calls == []
