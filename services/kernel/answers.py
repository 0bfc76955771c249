"""Public answers kept in memory until the data under them changes.

A read-mostly page (the event listing, an event page) is the same for every anonymous caller
until one of the tables it is built from changes. PostgreSQL says when: statement-level
triggers on those tables NOTIFY `changed_<schema>`, whoever writes (a handler, a consumer
applying events, an operator's SQL), and the notification is delivered after the commit. Every
instance LISTENs (`services/kernel/notifications.py`); each notification moves its generation on, and an
answer is served from memory only while the generation it was computed under is current.

A request takes the generation *before* it reads, so an answer built from data that changed
while it was being built is stored under an old generation and never served. A commit made by
this instance moves the generation on at once (before its answer leaves); a commit made by
another instance is seen when its notification arrives, normally well under a millisecond
later. While the listening connection is down nothing is served from memory.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from litestar import Request, Response
from litestar.serialization import encode_json

from services.kernel import metrics
from services.kernel.db import Database
from services.kernel.notifications import Notifications

log = logging.getLogger("resellio.answers")


def channel_of(schema: str) -> str:
    return f"changed_{schema}"


def notify_trigger_sql(schema: str, tables: list[str]) -> list[str]:
    """The migration's statements: one function, and a statement-level trigger per table."""
    function = f'"{schema}".notify_changed'
    statements = [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{channel_of(schema)}', ''); RETURN NULL; END $$"
    ]
    for table in tables:
        statements.append(
            f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f'ON "{schema}"."{table}" FOR EACH STATEMENT EXECUTE FUNCTION {function}()'
        )
    return statements


def drop_trigger_sql(schema: str, tables: list[str]) -> list[str]:
    statements = [f'DROP TRIGGER IF EXISTS {t}_changed ON "{schema}"."{t}"' for t in tables]
    return [*statements, f'DROP FUNCTION IF EXISTS "{schema}".notify_changed()']


class ChangeFeed:
    """This instance's view of when its schema last changed (fed by `Notifications`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.channel = channel_of(db.schema)
        self.generation = 0
        self.live = False

    def changed(self) -> None:
        self.generation += 1

    def listening(self, live: bool) -> None:
        """Whatever changed while nobody listened is unknown: every remembered answer goes."""
        self.live = live
        self.changed()

    def follow(self, notifications: Notifications) -> None:
        notifications.subscribe(self.channel, self.changed, self.listening)


@dataclass(frozen=True)
class Answer:
    generation: int
    body: bytes
    headers: dict[str, str]
    # When the answer stops being true with no write at all (this process's monotonic clock):
    # a listing on sale until its event ends, say.
    expires: float = math.inf
    # Built for a request without credentials: any such request for the same key gets it,
    # before routing (`AnsweredFromMemory`); and the route's template, for its metrics.
    anonymous: bool = False
    route: str = ""


def answer_key(scope: Any) -> str:
    """What an answer is remembered under: the path and the query, as received."""
    return f"{scope['path']}?{scope['query_string'].decode('latin-1')}"


# What the answers kept may weigh in all (keys and bodies): a key is the query as received, so
# URLs that differ only in parameters nobody reads (64 KB of junk each) would otherwise make
# every one of `size` entries a copy, hundreds of MB that no client ever asked for twice.
MAX_BYTES = 32 * 1024 * 1024


def _weight(key: str, answer: Answer) -> int:
    """What an answer kept counts against MAX_BYTES: its key and its body."""
    return len(key) + len(answer.body)


class AnswerCache:
    """At most `size` answers weighing `max_bytes` in all, least recently used first out;
    those of an earlier generation go as soon as the cache sees a newer one (none of them
    can be served again)."""

    def __init__(self, feed: ChangeFeed, size: int = 2048, max_bytes: int = MAX_BYTES) -> None:
        self.feed = feed
        self.size = size
        self.max_bytes = max_bytes
        self._answers: OrderedDict[str, Answer] = OrderedDict()
        self._bytes = 0
        self._generation = feed.generation

    @property
    def weight(self) -> int:
        """The bytes of the keys and bodies kept."""
        return self._bytes

    def get(self, key: str) -> Answer | None:
        answer = self._valid(key)
        outcome = "miss" if answer is None else "hit"
        metrics.child(metrics.answers_served, self.feed.db.schema, outcome).inc()
        return answer

    def for_anyone(self, key: str) -> Answer | None:
        """The answer under `key` if it holds and was built for a request without
        credentials (what any request without them would be answered); counted as a hit
        when found, and not counted otherwise (the request then goes to its handler)."""
        answer = self._valid(key)
        if answer is None or not answer.anonymous:
            return None
        metrics.child(metrics.answers_served, self.feed.db.schema, "hit").inc()
        return answer

    def _forget_older(self) -> None:
        if self._generation != self.feed.generation:
            self._answers.clear()
            self._bytes = 0
            self._generation = self.feed.generation

    def _valid(self, key: str) -> Answer | None:
        self._forget_older()
        answer = self._answers.get(key)
        if (
            answer is None
            or answer.generation != self.feed.generation
            or not self.feed.live
            or monotonic() >= answer.expires
        ):
            return None
        self._answers.move_to_end(key)
        return answer

    def put(self, key: str, answer: Answer) -> None:
        if answer.generation != self.feed.generation or not self.feed.live:
            return  # built from data that changed meanwhile (or unobserved): not kept
        if _weight(key, answer) > self.max_bytes:
            return
        self._forget_older()
        replaced = self._answers.pop(key, None)
        if replaced is not None:
            self._bytes -= _weight(key, replaced)
        self._answers[key] = answer
        self._bytes += _weight(key, answer)
        while len(self._answers) > self.size or self._bytes > self.max_bytes:
            self._bytes -= _weight(*self._answers.popitem(last=False))


Build = Callable[[], Awaitable[tuple[Any, dict[str, str]]]]


async def respond(
    request: Request,
    cache: AnswerCache | None,
    shared: bool,
    build: Build,
    valid_for: Callable[[], float] | None = None,
    *,
    variant: str = "",
    before_routing: bool = True,
) -> Response[Any]:
    """The 200 answer `build` gives (body, headers); from memory when `shared` (the same for
    every caller who gets it, e.g. anonymous) and nothing under it changed since. An answer
    that time alone makes untrue says for how long it holds: `valid_for()`, in seconds, read
    once `build` has run (the read that built it knows). An answer that differs by caller is
    remembered per `variant` (the caller's id, say). `before_routing=False` keeps it from
    being served before the handler runs (`AnsweredFromMemory`): for a handler that must do
    something first on every request, such as catching up with another service."""
    if cache is None or not shared:
        body, headers = await build()
        return Response(body, headers=headers)
    # A line break cannot be part of a request's path or query: no query names a variant.
    key = answer_key(request.scope) + (f"\n{variant}" if variant else "")
    answer = cache.get(key)
    if answer is None:
        generation = cache.feed.generation  # taken before reading, see the module's notes
        began = monotonic()
        body, headers = await build()
        answer = Answer(
            generation,
            encode_json(body),
            headers,
            began + valid_for() if valid_for is not None else math.inf,
            anonymous=before_routing and "authorization" not in request.headers,
            route=request.scope.get("path_template") or "",
        )
        cache.put(key, answer)
    return Response(answer.body, headers=answer.headers, media_type="application/json")
