"""Request shapes of auth (API.md §2.3, §3, §4). Only the listed fields are read."""

from __future__ import annotations

from typing import Annotated

import msgspec
from email_validator import EmailNotValidError

from services.auth.passwords import strong_password
from services.kernel.credentials import normalized_email
from services.kernel.validation import (
    INT32_MAX,
    Check,
    FieldError,
    Int32,
    NonBlank,
    NonBlank255,
)


def valid_email(value: str) -> str:
    """Syntax and domain checked (no DNS); the domain comes back lower-cased."""
    try:
        return normalized_email(value)
    except EmailNotValidError as exc:
        raise FieldError(f"value is not a valid email address: {exc}") from exc


Email = Annotated[str, msgspec.Meta(extra_json_schema={"format": "email"}), Check(valid_email)]
Password = Annotated[str, Check(strong_password)]


class CustomerRegistration(msgspec.Struct, frozen=True):
    email: Email
    login: NonBlank255
    password: Password
    first_name: NonBlank255
    last_name: NonBlank255


class OrganizerRegistration(CustomerRegistration, frozen=True):
    company_name: NonBlank255


class AdminRegistration(CustomerRegistration, frozen=True):
    admin_secret_key: NonBlank


class RefreshRequest(msgspec.Struct, frozen=True):
    refresh_token: NonBlank


class LogoutRequest(msgspec.Struct, frozen=True):
    refresh_token: str | None = None


class EmailRequest(msgspec.Struct, frozen=True):
    email: Email


class VerifyEmailQuery(msgspec.Struct, frozen=True):
    token: NonBlank


class PasswordReset(msgspec.Struct, frozen=True):
    token: NonBlank
    new_password: Password


class PasswordChange(msgspec.Struct, frozen=True):
    current_password: NonBlank
    new_password: Password


class OrganizerDecision(msgspec.Struct, frozen=True):
    organizer_id: Int32
    approve: bool


class ProfileUpdate(msgspec.Struct, frozen=True):
    first_name: NonBlank255 | None = None
    last_name: NonBlank255 | None = None
    login: NonBlank255 | None = None


class UserListQuery(msgspec.Struct, frozen=True):
    page: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)] = 1
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    search: str | None = None
    user_type: str | None = None
    is_active: bool | None = None
    is_verified: bool | None = None
    account_state: str | None = None
    sort_by: str = "creation_date"
    sort_order: str = "desc"


def _password_grant(value: str) -> str:
    if value != "password":
        raise FieldError("String should match pattern '^password$'", "string_pattern_mismatch")
    return value


class LoginForm(msgspec.Struct, frozen=True):
    """OAuth2 password form; `scope`, `client_id` and `client_secret` are ignored."""

    username: NonBlank
    password: NonBlank
    grant_type: Annotated[str, Check(_password_grant)] | None = None
