"""`AnsweredFromMemory` in front of a service's app, without a server: which requests it answers
from memory, before routing, and which it passes to the app."""

from __future__ import annotations

from time import monotonic
from types import SimpleNamespace
from typing import Any

from sqlalchemy import MetaData

from services.kernel.answers import Answer, AnswerCache, ChangeFeed
from services.kernel.app import AnsweredFromMemory
from services.kernel.db import Database


class App:
    """Stands for the litestar app: records the requests that reach it."""

    def __init__(self, cache: AnswerCache | None) -> None:
        extras = {"answers": cache} if cache is not None else {}
        self.state = SimpleNamespace(runtime=SimpleNamespace(extras=extras, service="catalog"))
        self.reached: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append(scope["path"])


def remembered(**kwargs: Any) -> AnswerCache:
    db = Database("postgresql+asyncpg://u@127.0.0.1:1/x", "catalog", MetaData(schema="catalog"))
    feed = ChangeFeed(db)
    feed.live = True
    cache = AnswerCache(feed)
    answer = Answer(feed.generation, b"[1]", {"X-Total-Count": "1"}, route="/api/events", **kwargs)
    cache.put("/api/events?limit=5", answer)
    return cache


def request(
    method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"limit=5"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/api/events",
        "query_string": query,
        "headers": headers or [],
    }


async def call(app: App, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await AnsweredFromMemory(app)(scope, None, send)  # type: ignore[arg-type]
    return sent


async def test_a_request_without_credentials_is_answered_before_the_app() -> None:
    app = App(remembered(anonymous=True))
    headers = [(b"x-request-id", b"first"), (b"x-request-id", b"second")]
    sent = await call(app, request(headers=headers))
    assert app.reached == []
    start, body = sent
    assert start["status"] == 200 and body["body"] == b"[1]"
    assert dict(start["headers"]) == {
        b"x-total-count": b"1",
        b"content-type": b"application/json",
        b"content-length": b"3",
        b"x-request-id": b"first",
    }


async def test_everything_else_goes_to_the_app() -> None:
    anonymous = remembered(anonymous=True)
    for app, scope in [
        (App(anonymous), request(headers=[(b"authorization", b"Bearer x")])),
        (App(anonymous), request(method="HEAD")),
        (App(anonymous), request(query=b"limit=6")),  # nothing remembered under it
        (App(remembered()), request()),  # built for a caller with a token
        (App(remembered(anonymous=True, expires=monotonic() - 1)), request()),
        (App(None), request()),  # a service that remembers nothing
    ]:
        assert await call(app, scope) == []
        assert app.reached == ["/api/events"], scope


def test_a_service_app_is_served_behind_it_and_anything_else_as_it_is() -> None:
    from litestar import Litestar

    from services.kernel.app import served

    assert isinstance(served(Litestar(route_handlers=[])), AnsweredFromMemory)
    other = App(None)
    assert served(other) is other
