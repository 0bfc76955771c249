"""Rate limits of API.md §1.7: per client IP and per account email, sliding windows.

Limitation (accepted for now): the counters live in this process's memory. With N gateway
instances behind a load balancer a client can get up to N times each limit, and a restart
forgets the counts. Making them global needs a shared store (e.g. Redis or a PostgreSQL table
with the same sliding-window rule); only `Window` would change.

Every limit is an environment variable `RATE_LIMIT_<NAME>` = `<count>/<period>` (period in
s, m or h: `20/1m`, `5/15m`) or `off`; `RATE_LIMITS=off` turns them all off. Clients in
`RATE_LIMIT_EXEMPT_NETWORKS` (CIDRs; loopback by default in development) are never limited.
The client is the connecting address; `X-Forwarded-For` is believed only from
`TRUSTED_PROXIES`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import deque
from typing import NamedTuple

import msgspec

from services.kernel.settings import ConfigError

LIMIT_DEFAULTS = {
    "login_ip": "20/1m",
    "login_failures_account": "5/15m",
    "register_ip": "10/1h",
    "register_account": "3/1h",
    "recovery_ip": "10/1h",
    "recovery_account": "3/1h",
    "refresh_ip": "60/1m",
    "change_password_failures_account": "5/15m",
}
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smh]?)\s*$")


class Limit(msgspec.Struct, frozen=True):
    count: int
    period_s: float


def parse_limit(raw: str, variable: str = "limit") -> Limit | None:
    """`20/1m` → 20 per 60 s; `off` (or a zero count) → no limit."""
    if raw.strip().lower() in ("off", "none", "0", ""):
        return None
    match = _LIMIT.match(raw.lower())
    if match is None:
        raise ConfigError(f"{variable} must look like 20/1m, 5/15m, 10/1h or off; got {raw!r}")
    count, amount, unit = match.groups()
    period = float(amount or 1) * _UNITS[unit]
    if int(count) == 0 or period <= 0:
        return None
    return Limit(int(count), period)


class Window:
    """A sliding log: a key is allowed `count` hits within any `period_s`. Each hit carries a
    tag (what a login named, as written), so that what clears a key's hits is exact."""

    __slots__ = ("_hits", "limit")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._hits: dict[str, deque[tuple[float, str]]] = {}

    def hit(self, key: str, now: float, tag: str = "") -> int:
        """Record a hit and return 0, or return the seconds to wait (nothing recorded)."""
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        horizon = now - self.limit.period_s
        while hits and hits[0][0] <= horizon:
            hits.popleft()
        if len(hits) >= self.limit.count:
            return max(1, math.ceil(hits[0][0] - horizon))
        hits.append((now, tag))
        return 0

    def take_back(self, key: str, stamp: float) -> None:
        """Forget one hit (a tentative failure that turned out not to be one)."""
        hits = self._hits.get(key)
        if hits is None:
            return
        for hit in hits:
            if hit[0] == stamp:
                hits.remove(hit)
                return

    def clear(self, key: str, tag: str | None = None) -> None:
        """Forget the key's hits (only those tagged `tag`, when given)."""
        hits = self._hits.get(key)
        if hits is not None and tag is not None:
            kept = deque(hit for hit in hits if hit[1] != tag)
            if kept:
                self._hits[key] = kept
                return
        self._hits.pop(key, None)

    def sweep(self, now: float) -> None:
        """Drop keys with no hit inside the window (bounded memory)."""
        horizon = now - self.limit.period_s
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1][0] <= horizon]:
            del self._hits[key]


class Networks:
    """A set of CIDRs; answers are cached per address (the set of clients is what it is)."""

    def __init__(self, cidrs: str) -> None:
        try:
            self._networks = [
                ipaddress.ip_network(c.strip(), strict=False) for c in cidrs.split(",") if c.strip()
            ]
        except ValueError as exc:
            raise ConfigError(f"not a network list: {cidrs!r} ({exc})") from exc
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: str) -> bool:
        known = self._cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self._networks)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[address] = known
        return known


def client_ip(peer: str, forwarded_for: str | None, proxies: Networks) -> str:
    """The connecting address, or, when it is a trusted proxy, the nearest address in
    X-Forwarded-For that is not one (hops further left could be forged by the client)."""
    if not forwarded_for or not proxies or peer not in proxies:
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if hop and hop not in proxies:
            return hop
    return peer


class Rule(NamedTuple):
    ip: str | None  # the per-IP limit's name
    account: str | None  # the per-account limit's name
    email_from: str | None  # "form" (login), "json" (body field email), "token" (caller)
    failures_only: bool  # only failed attempts count against the account


RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/api/auth/token"): Rule("login_ip", "login_failures_account", "form", True),
    **{
        ("POST", f"/api/auth/register/{kind}"): Rule(
            "register_ip", "register_account", "json", False
        )
        for kind in ("customer", "organizer", "admin")
    },
    **{
        ("POST", f"/api/auth/{path}"): Rule("recovery_ip", "recovery_account", "json", False)
        for path in ("request-password-reset", "resend-verification")
    },
    ("POST", "/api/auth/refresh"): Rule("refresh_ip", None, None, False),
    ("POST", "/api/user/change-password"): Rule(
        None, "change_password_failures_account", "token", True
    ),
}


class RateLimiter:
    def __init__(self, limits: dict[str, Limit | None], exempt: Networks, proxies: Networks):
        self.windows = {name: Window(limit) for name, limit in limits.items() if limit}
        self.exempt = exempt
        self.proxies = proxies

    def rule(self, method: str, path: str) -> Rule | None:
        if not self.windows:
            return None
        return RULES.get((method, path))

    def hit_ip(self, rule: Rule, ip: str, now: float) -> int:
        window = self.windows.get(rule.ip or "")
        if window is None or ip in self.exempt:
            return 0
        return window.hit(ip, now)

    def hit_account(
        self, rule: Rule, ip: str, email: str | None, now: float, spelling: str = ""
    ) -> int:
        """`email`: the account's key (`account_key`); `spelling`: the address as written."""
        window = self.windows.get(rule.account or "")
        if window is None or email is None or ip in self.exempt:
            return 0
        return window.hit(email, now, spelling)

    def settle(self, rule: Rule, email: str, stamp: float, status: int, spelling: str = "") -> None:
        """After the answer: a failures-only limit keeps only real failures (401 on login,
        400 on change-password); a successful login forgets the failures that named its own
        address as it was written. Not those of every address that shares its key: the key
        folds more than auth does ("ß" as "ss"), and a login to one's own "jeßica@" must
        not clear the failures counted against "jessica@"."""
        window = self.windows.get(rule.account or "")
        if window is None or not rule.failures_only:
            return
        failed = status == (401 if rule.email_from == "form" else 400)
        if status == 200 and rule.email_from == "form":
            window.clear(email, spelling)
        elif not failed:
            window.take_back(email, stamp)

    def sweep(self, now: float) -> None:
        for window in self.windows.values():
            window.sweep(now)
