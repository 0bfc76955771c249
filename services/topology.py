"""Which events each consumer receives: the one table the broker topology is declared from.

Every process declares the whole topology before publishing, so a consumer's queue exists
before any event it needs is published.
"""

from __future__ import annotations

import importlib
from functools import cache

from contracts import auth

CONSUMING_SERVICES = ("auth", "catalog", "ordering", "resale")
# What the gateway follows, on a queue of its own per instance (gateway/bus.py): the
# deny-list's changes. Some of them no service consumes; a relay never holds them back.
GATEWAY_FOLLOWS = (
    auth.UserBanned,
    auth.UserUnbanned,
    auth.PasswordChanged,
    auth.AccessTokenRevoked,
    auth.OrganizerRejected,
    auth.OrganizerVerified,
)


@cache
def subscriptions() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for service in CONSUMING_SERVICES:
        name = f"services.{service}.consumers"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, f"services.{service}"):
                raise  # a real import error inside the module, not a service that isn't built
            continue
        handlers = getattr(module, "HANDLERS", {})
        if handlers:
            table[service] = sorted(handlers)
    return table
