"""A WHERE clause written as text with numbered arguments, for statements sent straight to the
driver (services/kernel/db.py, `Driver`) whose filters depend on the request: a list read on
every visit, where building an SQLAlchemy statement, its cache key and its rows would cost
about as much as PostgreSQL's work. The shapes are few (which filters are present), so asyncpg
prepares each once per connection."""

from __future__ import annotations

from typing import Any


class Conditions:
    """A WHERE clause and its arguments ($1, $2, ... in the order added)."""

    def __init__(self, *fixed: str) -> None:
        self.parts = list(fixed)
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, fragment: str, *values: Any) -> None:
        """`fragment` with a `{}` for each value."""
        self.parts.append(fragment.format(*(self.arg(v) for v in values)))

    def range(self, column: str, low: Any, high: Any) -> None:
        if low is not None:
            self.add(f"{column} >= {{}}", low)
        if high is not None:
            self.add(f"{column} <= {{}}", high)

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts)
