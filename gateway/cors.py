"""CORS (API.md §1.6): only the configured origins, never `*` together with credentials."""

from __future__ import annotations

EXPOSED = b"X-Total-Count, X-Request-ID, Retry-After"
METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = b"Authorization, Content-Type, Idempotency-Key, X-Request-ID"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        # "*" alone means any origin, answered without credentials.
        self.any_origin = "*" in origins
        self.origins = frozenset(o.encode() for o in origins if o != "*")

    def allowed(self, origin: bytes) -> bool:
        return origin in self.origins or self.any_origin

    def response_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Headers for an actual (non-preflight) response to this Origin. With origins listed
        the answer depends on the Origin, whichever it is or none, so every response says so
        (`Vary`): a shared cache must not give the answer to one origin to another."""
        if not origin or not self.allowed(origin):
            return [(b"vary", b"Origin")] if self.origins else []
        if origin in self.origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-expose-headers", EXPOSED),
                (b"vary", b"Origin"),
            ]
        return [  # any origin, without credentials
            (b"access-control-allow-origin", b"*"),
            (b"access-control-expose-headers", EXPOSED),
        ]

    def preflight_headers(
        self, origin: bytes, requested_headers: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """Headers for a preflight answer; only `Vary` for an origin that is not allowed."""
        if not self.allowed(origin):
            return [(b"vary", b"Origin")]
        return [
            *self.response_headers(origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", requested_headers or ALLOWED_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
