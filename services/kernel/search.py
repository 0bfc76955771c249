"""The search rule of API.md §1.4, for every list that takes a search parameter."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement


def contains(column: Any, term: str) -> ColumnElement[bool]:
    """Case-insensitive literal substring: %, _ and \\ are not wildcards."""
    literal = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{literal}%", escape="\\")  # type: ignore[no-any-return]
