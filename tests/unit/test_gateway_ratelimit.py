"""Rate-limit windows, configuration and client addresses (API.md §1.7)."""

from __future__ import annotations

import pytest

from gateway import config
from gateway.edge import _spelling
from gateway.ratelimit import Limit, Networks, RateLimiter, Window, client_ip, parse_limit
from services.kernel.credentials import account_key, account_spelling
from services.kernel.settings import ConfigError


def test_limits_read_count_and_period() -> None:
    assert parse_limit("20/1m") == Limit(20, 60)
    assert parse_limit("5/15m") == Limit(5, 900)
    assert parse_limit("10/1h") == Limit(10, 3600)
    assert parse_limit("3/30s") == Limit(3, 30)
    assert parse_limit("7/90") == Limit(7, 90)
    assert parse_limit("off") is None
    assert parse_limit("0/1m") is None
    with pytest.raises(ConfigError):
        parse_limit("twenty per minute", "RATE_LIMIT_LOGIN_IP")


def test_a_window_allows_count_hits_then_says_how_long_to_wait() -> None:
    window = Window(Limit(3, 60))
    assert [window.hit("k", t) for t in (0.0, 1.0, 2.0)] == [0, 0, 0]
    assert window.hit("k", 10.0) == 50  # the hit at 0 leaves the window at 60
    assert window.hit("other", 10.0) == 0
    assert window.hit("k", 60.5) == 0  # sliding: the first hit has left
    assert window.hit("k", 60.6) == 1  # the next leaves at 61; never less than 1 s


def test_a_refused_hit_is_not_counted() -> None:
    window = Window(Limit(1, 10))
    assert window.hit("k", 0.0) == 0
    for t in (1.0, 2.0, 3.0):
        assert window.hit("k", t) > 0
    assert window.hit("k", 10.1) == 0


def test_take_back_and_sweep() -> None:
    window = Window(Limit(2, 10))
    window.hit("k", 0.0)
    window.hit("k", 1.0)
    window.take_back("k", 1.0)
    assert window.hit("k", 2.0) == 0
    window.sweep(100.0)
    assert window._hits == {}


def test_failed_logins_count_and_a_success_starts_afresh() -> None:
    limiter = RateLimiter(
        {"login_ip": None, "login_failures_account": Limit(2, 900)}, Networks(""), Networks("")
    )
    rule = limiter.rule("POST", "/api/auth/token")
    assert rule is not None
    assert limiter.hit_account(rule, "1.2.3.4", "a@x.io", 1.0) == 0
    limiter.settle(rule, "a@x.io", 1.0, 403)  # right password, banned: not a failure
    for t in (2.0, 3.0):
        assert limiter.hit_account(rule, "1.2.3.4", "a@x.io", t) == 0
        limiter.settle(rule, "a@x.io", t, 401)
    assert limiter.hit_account(rule, "1.2.3.4", "a@x.io", 4.0) > 0
    limiter.windows["login_failures_account"].clear("a@x.io")
    assert limiter.hit_account(rule, "1.2.3.4", "a@x.io", 5.0) == 0
    limiter.settle(rule, "a@x.io", 5.0, 200)
    assert limiter.windows["login_failures_account"]._hits.get("a@x.io") is None


def test_a_success_clears_only_the_failures_of_its_own_spelling() -> None:
    """The key folds more than auth compares ("ß" as "ss"): a login to one's own
    "jeßica@" shares the count of "jessica@", and must not wipe the failures against it
    (4 guesses, 1 success, over and over, would get past 5 per 15 minutes)."""
    limiter = RateLimiter(
        {"login_ip": None, "login_failures_account": Limit(5, 900)}, Networks(""), Networks("")
    )
    rule = limiter.rule("POST", "/api/auth/token")
    assert rule is not None
    victim, own = "jessica@example.com", "je\u00dfica@example.com"
    key = account_key(victim)
    assert account_key(own) == key and account_spelling(own) != account_spelling(victim)
    t = 0.0
    for _ in range(4):
        t += 1
        assert limiter.hit_account(rule, "1.2.3.4", key, t, account_spelling(victim)) == 0
        limiter.settle(rule, key, t, 401, account_spelling(victim))
    t += 1
    assert limiter.hit_account(rule, "1.2.3.4", key, t, account_spelling(own)) == 0
    limiter.settle(rule, key, t, 200, account_spelling(own))
    assert limiter.hit_account(rule, "1.2.3.4", key, t + 1, account_spelling(victim)) == 0
    limiter.settle(rule, key, t + 1, 401, account_spelling(victim))
    assert limiter.hit_account(rule, "1.2.3.4", key, t + 2, account_spelling(victim)) > 0
    # The victim's own success (as spelled when failing) does clear them.
    limiter.windows["login_failures_account"].clear(key, account_spelling(victim))
    assert limiter.hit_account(rule, "1.2.3.4", key, t + 3, account_spelling(victim)) == 0


def test_exempt_networks_are_never_limited() -> None:
    limiter = RateLimiter(
        {"refresh_ip": Limit(1, 60)}, Networks("10.0.0.0/8,::1/128"), Networks("")
    )
    rule = limiter.rule("POST", "/api/auth/refresh")
    assert rule is not None
    assert all(limiter.hit_ip(rule, "10.1.2.3", float(t)) == 0 for t in range(5))
    assert all(limiter.hit_ip(rule, "::1", float(t)) == 0 for t in range(5))
    assert limiter.hit_ip(rule, "11.0.0.1", 0.0) == 0
    assert limiter.hit_ip(rule, "11.0.0.1", 1.0) > 0


def test_networks_match_cidrs_and_refuse_garbage() -> None:
    networks = Networks("127.0.0.0/8, 192.168.0.0/16")
    assert "127.0.0.1" in networks and "192.168.4.5" in networks
    assert "192.169.0.1" not in networks and "not-an-ip" not in networks
    assert not Networks("")
    with pytest.raises(ConfigError):
        Networks("10.0.0.0/33")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = Networks("10.0.0.0/8")
    # A client talking to us directly cannot choose its address.
    assert client_ip("203.0.113.9", "1.1.1.1", proxies) == "203.0.113.9"
    # Through our proxy: the nearest hop that is not one of ours; forged hops further left.
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7", proxies) == "198.51.100.7"
    assert client_ip("10.0.0.2", "198.51.100.7, 10.0.0.3", proxies) == "198.51.100.7"
    assert client_ip("10.0.0.2", None, proxies) == "10.0.0.2"
    assert client_ip("10.0.0.2", "1.1.1.1", Networks("")) == "10.0.0.2"


def test_development_exempts_loopback_and_production_does_not() -> None:
    dev = config.load({"ENVIRONMENT": "development"})
    prod = config.load({"ENVIRONMENT": "production"})
    assert "127.0.0.1" in dev.exempt() and "::1" in dev.exempt()
    assert "127.0.0.1" not in prod.exempt()
    assert prod.rate_limits["login_ip"] == Limit(20, 60)
    assert prod.rate_limits["change_password_failures_account"] == Limit(5, 900)
    off = config.load({"RATE_LIMITS": "off"})
    assert all(v is None for v in off.rate_limits.values())
    one = config.load({"RATE_LIMIT_REFRESH_IP": "off", "RATE_LIMIT_LOGIN_IP": "2/10s"})
    assert one.rate_limits["refresh_ip"] is None and one.rate_limits["login_ip"] == Limit(2, 10)
    custom = config.load({"ENVIRONMENT": "development", "RATE_LIMIT_EXEMPT_NETWORKS": ""})
    assert "127.0.0.1" not in custom.exempt()


def test_only_an_address_auth_could_store_is_counted_per_account() -> None:
    """A username that is no address (a megabyte of text, say) names no account: counting it
    per account would keep the whole of it for 15 minutes, per attempt."""
    assert _spelling(b"username=" + b"a" * 1_000_000 + b"&password=x", "form") is None
    assert _spelling(b"username=not+an+address&password=x", "form") is None
    assert _spelling(b'{"email": "' + b"b" * 100_000 + b'@example.com"}', "json") is None
    assert _spelling(b"username=+Ann%40EXAMPLE.com+&password=x", "form") == "Ann@example.com"
    assert _spelling(b'{"email": "ann@example.com"}', "json") == "ann@example.com"
