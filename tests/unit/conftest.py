"""Fixtures the unit tests share."""

from tests.support.plain_server import serve  # noqa: F401  (a plain HTTP server to talk to)
