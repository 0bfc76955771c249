"""The answer cache's rules, without a database: what may be kept, and when it is served."""

from __future__ import annotations

from time import monotonic

from sqlalchemy import MetaData

from services.kernel.answers import Answer, AnswerCache, ChangeFeed, notify_trigger_sql
from services.kernel.db import Database


def cache(size: int = 2048) -> AnswerCache:
    db = Database("postgresql+asyncpg://u@127.0.0.1:1/x", "catalog", MetaData(schema="catalog"))
    feed = ChangeFeed(db)
    feed.live = True
    return AnswerCache(feed, size)


def test_an_answer_is_served_until_the_next_change() -> None:
    c = cache()
    c.put("/a?", Answer(c.feed.generation, b"[1]", {"X-Total-Count": "1"}))
    hit = c.get("/a?")
    assert hit is not None and hit.body == b"[1]" and hit.headers == {"X-Total-Count": "1"}
    c.feed.changed()
    assert c.get("/a?") is None


def test_an_answer_that_time_makes_untrue_is_served_only_until_then() -> None:
    c = cache()
    now = monotonic()
    c.put("/soon?", Answer(c.feed.generation, b"[1]", {}, expires=now + 60))
    c.put("/gone?", Answer(c.feed.generation, b"[1]", {}, expires=now - 0.001))
    assert c.get("/soon?") is not None
    assert c.get("/gone?") is None


def test_only_an_answer_built_without_credentials_is_given_to_anyone_before_routing() -> None:
    c = cache()
    g = c.feed.generation
    c.put("/public?", Answer(g, b"[1]", {}, anonymous=True, route="/public"))
    c.put("/shared?", Answer(g, b"[2]", {}))  # built for a customer: the handler decides
    assert c.get("/shared?") is not None
    assert c.for_anyone("/shared?") is None
    found = c.for_anyone("/public?")
    assert found is not None and found.body == b"[1]" and found.route == "/public"
    c.feed.changed()
    assert c.for_anyone("/public?") is None


def test_an_answer_built_while_the_data_changed_is_not_kept() -> None:
    c = cache()
    taken = c.feed.generation  # before reading
    c.feed.changed()  # a commit lands while the answer is being built
    c.put("/a?", Answer(taken, b"[old]", {}))
    assert c.get("/a?") is None


def test_nothing_is_served_or_kept_while_nobody_listens() -> None:
    c = cache()
    c.put("/a?", Answer(c.feed.generation, b"[1]", {}))
    c.feed.live = False
    assert c.get("/a?") is None
    c.put("/b?", Answer(c.feed.generation, b"[2]", {}))
    c.feed.live = True
    assert c.get("/b?") is None


def test_the_least_recently_used_answer_goes_first() -> None:
    c = cache(size=2)
    g = c.feed.generation
    c.put("/a?", Answer(g, b"a", {}))
    c.put("/b?", Answer(g, b"b", {}))
    assert c.get("/a?") is not None  # /a is now the most recent
    c.put("/c?", Answer(g, b"c", {}))
    assert c.get("/b?") is None and c.get("/a?") is not None and c.get("/c?") is not None


def test_every_listed_table_notifies_on_every_kind_of_write() -> None:
    sql = notify_trigger_sql("catalog", ["events", "locations"])
    assert "pg_notify('changed_catalog', '')" in sql[0]
    for table, statement in zip(["events", "locations"], sql[1:], strict=True):
        assert f'ON "catalog"."{table}"' in statement
        assert "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE" in statement
        assert "FOR EACH STATEMENT" in statement


def test_the_answers_kept_weigh_no_more_than_the_budget() -> None:
    """URLs that differ only in junk parameters (each a new key) cannot fill the memory: the
    least recently used go once keys and bodies weigh more than the budget."""
    db = Database("postgresql+asyncpg://u@127.0.0.1:1/x", "catalog", MetaData(schema="catalog"))
    feed = ChangeFeed(db)
    feed.live = True
    c = AnswerCache(feed, size=2048, max_bytes=10_000)
    body = b"x" * 1_000
    for i in range(100):
        c.put(f"/api/events?junk={i}", Answer(feed.generation, body, {}))
        assert c.weight <= 10_000
    assert c.get("/api/events?junk=99") is not None  # the newest kept
    assert c.get("/api/events?junk=0") is None  # the oldest gone
    c.put("/api/events?huge", Answer(feed.generation, b"x" * 20_000, {}))  # over on its own
    assert c.get("/api/events?huge") is None and c.weight <= 10_000
    c.put("/api/events?junk=99", Answer(feed.generation, b"y", {}))  # replaced: weighed again
    assert (
        c.weight
        == sum(len(f"/api/events?junk={i}") + 1_000 for i in range(91, 99))
        + len("/api/events?junk=99")
        + 1
    )


def test_a_change_lets_go_of_every_answer_kept_before_it() -> None:
    c = cache()
    c.put("/a?", Answer(c.feed.generation, b"x" * 5_000, {}))
    assert c.weight > 5_000
    c.feed.changed()
    assert c.get("/b?") is None and c.weight == 0
    # The same through a put, and through the lookup before routing.
    c.put("/a?", Answer(c.feed.generation, b"x" * 5_000, {}, anonymous=True))
    c.feed.changed()
    c.put("/c?", Answer(c.feed.generation, b"yy", {}))
    assert c.weight == len("/c?") + 2
    c.feed.changed()
    assert c.for_anyone("/c?") is None and c.weight == 0
