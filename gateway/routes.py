"""Which service answers which public path (API.md §1.1)."""

from __future__ import annotations

from services.kernel.validation import id_in_path

# Longest prefix first; a prefix matches the path itself or the path followed by "/".
ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/tickets/check-in", "ordering"),
    ("/api/auth", "auth"),
    ("/api/user", "auth"),
    ("/api/locations", "catalog"),
    ("/api/events", "catalog"),
    ("/api/ticket-types", "catalog"),
    ("/api/cart", "ordering"),
    ("/api/orders", "ordering"),
    ("/api/resale", "resale"),
    ("/api/tickets", "ordering"),
)


def service_for(path: str) -> str | None:
    """The service that owns `path`; /api/tickets/{id}/resell belongs to resale."""
    if path.startswith("/api/tickets/"):
        parts = path.rstrip("/").split("/")
        if len(parts) == 5 and parts[4] == "resell":
            return "resale"
    for prefix, service in ROUTES:
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?"):
            return service
    return None


# Public auth endpoints where a bad Authorization header is ignored (auth answers them
# without a token; logout accepts an invalid one by contract).
TOKEN_EXEMPT = frozenset(
    "/api/auth/" + p
    for p in (
        "token",
        "register/customer",
        "register/organizer",
        "refresh",
        "logout",
        "verify-email",
        "resend-verification",
        "request-password-reset",
        "reset-password",
        ".well-known/jwks.json",
    )
)
_EVENT_PAGE = "/api/events/"
_BAN = "/api/auth/ban-user/"
_UNBAN = "/api/auth/unban-user/"
VERIFY_ORGANIZER = "/api/auth/verify-organizer"
LOGOUT = "/api/auth/logout"
# Answered 200, these revoke tokens issued before them, of a user only auth can name.
PASSWORD_CHANGES = frozenset({"/api/auth/reset-password", "/api/user/change-password"})


def without_trailing_slash(path: str) -> str:
    """Every route answers with and without a trailing slash, identically (API.md §1.2)."""
    return path.rstrip("/") or "/" if path.endswith("/") else path


def event_page_id(path: str) -> str | None:
    """The id part of `GET /api/events/{event_id}`, the page the gateway composes."""
    if path.startswith(_EVENT_PAGE):
        rest = path[len(_EVENT_PAGE) :]
        if rest and "/" not in rest:
            return rest
    return None


def ban_target(path: str) -> tuple[bool, int] | None:
    """(banned?, user_id) for the admin's ban-user / unban-user paths."""
    for prefix, banned in ((_BAN, True), (_UNBAN, False)):
        if path.startswith(prefix):
            if user_id := id_in_path(path[len(prefix) :]):
                return banned, user_id
    return None
