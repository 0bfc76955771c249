"""Events published by auth (API.md §11)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from contracts.envelope import Event, register


class UserRegistered(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.UserRegistered"
    user_id: int
    email: str
    role: str
    role_id: int
    first_name: str
    last_name: str
    login: str
    account_state: str
    company_name: str | None = None
    is_verified: bool | None = None


class EmailVerified(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.EmailVerified"
    user_id: int
    method: str  # "email_link" | "admin_approval"
    approved_by: int | None = None


class OrganizerVerified(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.OrganizerVerified"
    user_id: int
    organizer_id: int
    by: int | None = None
    account_state: str | None = None  # after the decision (a ban-user ban outlives approval)
    # An approval that lifted a rejection: tokens issued before it stay invalid (§2.4).
    at: datetime | None = None


class OrganizerRejected(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.OrganizerRejected"
    user_id: int
    organizer_id: int
    by: int | None = None
    account_state: str | None = None
    at: datetime | None = None


class UserBanned(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.UserBanned"
    user_id: int
    role: str
    role_id: int
    at: datetime
    account_state: str


class UserUnbanned(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.UserUnbanned"
    user_id: int
    role: str
    role_id: int
    at: datetime
    account_state: str


class UserProfileUpdated(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.UserProfileUpdated"
    user_id: int
    login: str
    first_name: str
    last_name: str


class PasswordChanged(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.PasswordChanged"
    user_id: int
    changed_at: datetime


class AccessTokenRevoked(Event, frozen=True):
    TYPE: ClassVar[str] = "auth.AccessTokenRevoked"
    jti: str
    user_id: int
    expires_at: datetime


register(
    UserRegistered,
    EmailVerified,
    OrganizerVerified,
    OrganizerRejected,
    UserBanned,
    UserUnbanned,
    UserProfileUpdated,
    PasswordChanged,
    AccessTokenRevoked,
)
