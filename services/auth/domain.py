"""The rules of auth, one entry per use case (API.md §2–§4). The HTTP handlers call only
these; each lives in a short module of its own:

- registration.py: new accounts (customer, organizer, administrator), the initial admin
- sessions.py: login, refresh-token rotation, logout
- recovery.py: email verification, password reset and change
- moderation.py: approve a customer, ban, unban, verify or reject an organizer
- profiles.py: a user's own profile and what others see of it
- queries.py: user details, the admin list and stats, the gateway's deny-list
"""

from __future__ import annotations

from services.auth.moderation import approve_user, ban, decide_organizer, unban
from services.auth.profiles import public_profile, update_profile
from services.auth.queries import (
    denylist,
    list_users,
    pending_organizers,
    user_by_id,
    user_details,
    user_stats,
)
from services.auth.recovery import (
    change_password,
    request_password_reset,
    resend_verification,
    reset_password,
    verify_email,
)
from services.auth.registration import ensure_initial_admin, register, register_admin
from services.auth.sessions import PENDING, login, logout, refresh

__all__ = [
    "PENDING",
    "approve_user",
    "ban",
    "change_password",
    "decide_organizer",
    "denylist",
    "ensure_initial_admin",
    "list_users",
    "login",
    "logout",
    "pending_organizers",
    "public_profile",
    "refresh",
    "register",
    "register_admin",
    "request_password_reset",
    "resend_verification",
    "reset_password",
    "unban",
    "update_profile",
    "user_by_id",
    "user_details",
    "user_stats",
    "verify_email",
]
