"""Which driver errors mean "the database cannot serve us now" (503), not "this request is
wrong": statements sent straight to asyncpg are judged like SQLAlchemy's."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import InterfaceError

from services.kernel.db import DatabaseUnavailable, _translated, is_unavailable


def test_connection_and_shutdown_errors_are_unavailable() -> None:
    for exc in (
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
        ConnectionResetError(),
    ):
        assert is_unavailable(exc), exc
        assert isinstance(_translated(exc), DatabaseUnavailable)


def test_errors_of_the_statement_itself_are_not() -> None:
    for exc in (
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.CheckViolationError("inventory_not_negative"),
        asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range"),
        # The driver's own, for a statement sent wrongly: a bug, which a consumer would
        # otherwise hold and retry for ever as an outage instead of dead-lettering it.
        asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ):
        assert not is_unavailable(exc), exc
        assert _translated(exc) is exc


def _through_sqlalchemy(driver_error: Exception) -> InterfaceError:
    """The driver's error as SQLAlchemy's asyncpg dialect raises it (its own error around it)."""
    try:
        try:
            raise driver_error
        except Exception as exc:
            raise RuntimeError(str(exc)) from exc
    except RuntimeError as adapted:
        return InterfaceError("SELECT 1", None, adapted)


def test_the_drivers_own_errors_are_judged_the_same_through_sqlalchemy() -> None:
    closed = _through_sqlalchemy(asyncpg.InterfaceError("connection is closed"))
    assert is_unavailable(closed)
    wrong = _through_sqlalchemy(
        asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed")
    )
    assert not is_unavailable(wrong)
