"""Events auth reacts to: none yet (auth is the source of identity)."""

from __future__ import annotations

from services.kernel.consumer import Handler

HANDLERS: dict[str, Handler] = {}
