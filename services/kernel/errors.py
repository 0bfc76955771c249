"""Errors that cross the HTTP boundary, with the exact bodies API.md specifies."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A broken business rule with a stable message. Subclasses fix the status code."""

    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401

    def __init__(self, detail: str = "Not authenticated") -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class PaymentRequired(DomainError):
    status_code = 402


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class TooManyRequests(DomainError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many requests. Try again later.", {"Retry-After": str(retry_after)})


class ServiceUnavailable(DomainError):
    status_code = 503

    def __init__(self, detail: str = "Service unavailable") -> None:
        super().__init__(detail)


class RequestValidationError(Exception):
    """422: one entry per problem, `{"loc": [...], "msg": ..., "type": ...}`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @classmethod
    def single(cls, loc: list[str | int], msg: str, type_: str) -> RequestValidationError:
        return cls([{"loc": loc, "msg": msg, "type": type_}])
