"""Which service answers which public path (API.md §1.1)."""

from __future__ import annotations

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
