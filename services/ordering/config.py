"""Ordering's own settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from functools import cache

import msgspec

from services.kernel.db import Database
from services.kernel.payments import PaymentProvider, SimulatedProvider
from services.kernel.settings import ConfigError


class OrderingSettings(msgspec.Struct, frozen=True):
    # Fractional minutes are allowed (tests use a hold of a second or two).
    cart_hold_minutes: float = 15.0
    max_tickets_per_customer_per_event: int = 20
    payment_latency_ms: float = 30.0
    hold_sweep_interval_s: float = 1.0
    # A checkout still pending after this long died with its process (see recovery.py).
    checkout_stalled_after_s: float = 120.0

    @property
    def hold_for(self) -> timedelta:
        return timedelta(minutes=self.cart_hold_minutes)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def load(env: Mapping[str, str] | None = None) -> OrderingSettings:
    env = os.environ if env is None else env
    hold = _number(env, "CART_HOLD_MINUTES", 15.0)
    return OrderingSettings(
        cart_hold_minutes=hold,
        max_tickets_per_customer_per_event=int(
            _number(env, "MAX_TICKETS_PER_CUSTOMER_PER_EVENT", 20)
        ),
        payment_latency_ms=_number(env, "PAYMENT_LATENCY_MS", 30.0),
        # Sweep often enough that a short hold is released close to its expiry.
        hold_sweep_interval_s=_number(
            env, "HOLD_SWEEP_INTERVAL_S", min(1.0, max(0.1, hold * 60 / 4))
        ),
        checkout_stalled_after_s=_number(env, "CHECKOUT_STALLED_AFTER_S", 120.0),
    )


@cache
def current() -> OrderingSettings:
    """The process's settings (the environment is read once)."""
    return load()


def payment_provider(db: Database) -> PaymentProvider:
    """The provider that ships: the simulated card processor, its ledger in our schema."""
    return SimulatedProvider(db, current().payment_latency_ms)
