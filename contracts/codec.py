"""One encoder and one decoder, reused by every process for HTTP bodies and events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from contracts.envelope import Envelope, Event, payload_type

T = TypeVar("T")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


encoder = msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="string")
_envelope_decoder = msgspec.json.Decoder(Envelope)


def encode(obj: Any) -> bytes:
    return encoder.encode(obj)


def decode(data: bytes | str, type_: type[T]) -> T:
    return msgspec.json.decode(data, type=type_)


def decode_envelope(data: bytes) -> Envelope:
    return _envelope_decoder.decode(data)


class UnknownEvent(Exception):
    """An event type or version this consumer has never seen."""


def decode_payload(envelope: Envelope) -> Event:
    payload_cls = payload_type(envelope.type, envelope.version)
    if payload_cls is None:
        raise UnknownEvent(f"{envelope.type} v{envelope.version}")
    return msgspec.json.decode(envelope.payload, type=payload_cls)
