"""The one envelope every domain event travels in (ARCHITECTURE.md §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every event payload. Subclasses set TYPE (the routing key) and VERSION."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


class Envelope(msgspec.Struct, kw_only=True, frozen=True):
    id: UUID
    type: str
    version: int
    occurred_at: datetime
    producer: str
    aggregate_id: str
    sequence: int
    correlation_id: str | None = None
    causation_id: str | None = None
    # Kept encoded until the consumer knows which payload type (and version) to decode into.
    payload: msgspec.Raw = msgspec.Raw(b"{}")


_registry: dict[tuple[str, int], type[Event]] = {}


def register(*event_types: type[Event]) -> None:
    for event_type in event_types:
        _registry[(event_type.TYPE, event_type.VERSION)] = event_type


def payload_type(type_name: str, version: int) -> type[Event] | None:
    return _registry.get((type_name, version))


def known_types() -> list[str]:
    return sorted({name for name, _ in _registry})


def event_types(producer: str) -> list[type[Event]]:
    return [t for (name, _), t in _registry.items() if name.startswith(producer + ".")]


def to_builtins(event: Event) -> Any:
    return msgspec.to_builtins(event)
