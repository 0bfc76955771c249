"""The search rule of API.md §1.4, for every list that takes a search parameter."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement


def like_pattern(term: str) -> str:
    """The ILIKE pattern of a literal substring: %, _ and \\ (LIKE's default escape) are not
    wildcards."""
    literal = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{literal}%"


def contains(column: Any, term: str) -> ColumnElement[bool]:
    """Case-insensitive literal substring: %, _ and \\ are not wildcards."""
    return column.ilike(like_pattern(term), escape="\\")  # type: ignore[no-any-return]
