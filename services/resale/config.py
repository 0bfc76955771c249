"""Resale's own settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import cache

import msgspec

from services.kernel.db import Database
from services.kernel.payments import PaymentProvider, SimulatedProvider
from services.kernel.settings import ConfigError


class ResaleSettings(msgspec.Struct, frozen=True):
    # The deployment's anti-scalping cap in percent of the original price; None = no cap.
    price_cap_percent: int | None = None
    # What resale keeps of each sale; the seller's payout is the rest.
    fee_percent: Decimal = Decimal("5")
    # How long a purchase waits for ordering to move the ticket before answering 202.
    transfer_wait_s: float = 10.0
    payment_latency_ms: float = 30.0
    # A purchase still `charging` after this long died with its request (purchase.py).
    purchase_stalled_after_s: float = 60.0


def _decimal(env: Mapping[str, str], name: str, default: str) -> Decimal:
    raw = env.get(name, "").strip() or default
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {raw!r}")
    return value


def load(env: Mapping[str, str] | None = None) -> ResaleSettings:
    env = os.environ if env is None else env
    cap_raw = env.get("RESALE_PRICE_CAP_PERCENT", "").strip()
    cap = int(_decimal(env, "RESALE_PRICE_CAP_PERCENT", "0")) if cap_raw else None
    fee = _decimal(env, "RESALE_FEE_PERCENT", "5")
    if fee > 100:
        raise ConfigError("RESALE_FEE_PERCENT must be at most 100")
    return ResaleSettings(
        price_cap_percent=cap,
        fee_percent=fee,
        transfer_wait_s=float(_decimal(env, "RESALE_TRANSFER_WAIT_S", "10")),
        payment_latency_ms=float(_decimal(env, "PAYMENT_LATENCY_MS", "30")),
        purchase_stalled_after_s=float(_decimal(env, "PURCHASE_STALLED_AFTER_S", "60")),
    )


@cache
def current() -> ResaleSettings:
    """The process's settings (the environment is read once)."""
    return load()


def payment_provider(db: Database) -> PaymentProvider:
    """The provider that ships: the simulated card processor, its ledger in our schema."""
    return SimulatedProvider(db, current().payment_latency_ms)
