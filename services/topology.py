"""Which events each consumer receives: the one table the broker topology is declared from.

Every process declares the whole topology before publishing, so a consumer's queue exists
before any event it needs is published.
"""

from __future__ import annotations

import importlib
from functools import cache

CONSUMING_SERVICES = ("auth", "catalog", "ordering", "resale")


@cache
def subscriptions() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for service in CONSUMING_SERVICES:
        try:
            module = importlib.import_module(f"services.{service}.consumers")
        except ModuleNotFoundError:
            continue
        handlers = getattr(module, "HANDLERS", {})
        if handlers:
            table[service] = sorted(handlers)
    return table
