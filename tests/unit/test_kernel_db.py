"""Which driver errors mean "the database cannot serve us now" (503), not "this request is
wrong": statements sent straight to asyncpg are judged like SQLAlchemy's."""

from __future__ import annotations

import asyncpg

from services.kernel.db import DatabaseUnavailable, _translated, is_unavailable


def test_connection_and_shutdown_errors_are_unavailable() -> None:
    for exc in (
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients"),
        ConnectionResetError(),
    ):
        assert is_unavailable(exc), exc
        assert isinstance(_translated(exc), DatabaseUnavailable)


def test_errors_of_the_statement_itself_are_not() -> None:
    for exc in (
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.CheckViolationError("inventory_not_negative"),
        asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range"),
    ):
        assert not is_unavailable(exc), exc
        assert _translated(exc) is exc
