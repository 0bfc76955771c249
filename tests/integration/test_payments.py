"""The simulated card processor on the real PostgreSQL: idempotent by key, declines the test
card, never refunds more than was captured, and shares its ledger between instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from services.kernel.db import Database
from services.kernel.payments import (
    PaymentDeclined,
    PaymentRejected,
    PaymentUnavailable,
    SimulatedProvider,
    payment_tables,
)
from tests.integration.conftest import schema_with


@pytest.fixture
async def ledger(integration_db_url: str, schema_name: str) -> AsyncIterator[Database]:
    async with schema_with(integration_db_url, schema_name, payment_tables, 4) as db:
        yield db


async def test_one_key_one_charge_across_instances(ledger: Database) -> None:
    first, second = SimulatedProvider(ledger, 5), SimulatedProvider(ledger, 5)
    ids = await asyncio.gather(
        *(
            p.authorize(
                idempotency_key="order-1", amount=Decimal("30.00"), currency="USD", token=None
            )
            for p in (first, second, first, second)
        )
    )
    assert len(set(ids)) == 1
    await asyncio.gather(
        first.capture(ids[0], idempotency_key="order-1-capture"),
        second.capture(ids[0], idempotency_key="order-1-capture"),
    )
    payments, operations = payment_tables(ledger.metadata)
    async with ledger.engine.connect() as conn:
        assert (await conn.execute(select(payments.c.state))).scalars().all() == ["captured"]
        assert await conn.scalar(select(func.count()).select_from(operations)) == 1


async def test_declined_and_unavailable_cards(ledger: Database) -> None:
    provider = SimulatedProvider(ledger, 0)
    for token in ("tok_card_declined", "4000000000000002"):
        with pytest.raises(PaymentDeclined):
            await provider.authorize(
                idempotency_key=f"d-{token}", amount=Decimal(1), currency="USD", token=token
            )
        with pytest.raises(PaymentDeclined):  # the same key answers the same
            await provider.authorize(
                idempotency_key=f"d-{token}", amount=Decimal(1), currency="USD", token=None
            )
    with pytest.raises(PaymentUnavailable):
        await provider.authorize(
            idempotency_key="u",
            amount=Decimal(1),
            currency="USD",
            token="tok_processor_unavailable",
        )


async def test_refunds_never_exceed_the_capture(ledger: Database) -> None:
    provider = SimulatedProvider(ledger, 0)
    pid = await provider.authorize(
        idempotency_key="o", amount=Decimal("50.00"), currency="USD", token=None
    )
    with pytest.raises(PaymentRejected):
        await provider.refund(pid, Decimal("1.00"), idempotency_key="too-early")
    await provider.capture(pid, idempotency_key="c")
    await provider.refund(pid, Decimal("30.00"), idempotency_key="r1")
    await provider.refund(
        pid, Decimal("30.00"), idempotency_key="r1"
    )  # a retry, not a second refund
    with pytest.raises(PaymentRejected):
        await provider.refund(pid, Decimal("30.00"), idempotency_key="r2")
    await provider.refund(pid, Decimal("20.00"), idempotency_key="r3")
    with pytest.raises(PaymentRejected):
        await provider.void(pid, idempotency_key="v")


async def test_capture_and_void_move_an_authorization_once(ledger: Database) -> None:
    provider = SimulatedProvider(ledger, 0)
    captured = await provider.authorize(
        idempotency_key="a1", amount=Decimal("10.00"), currency="USD", token=None
    )
    voided = await provider.authorize(
        idempotency_key="a2", amount=Decimal("10.00"), currency="USD", token=None
    )
    await provider.capture(captured, idempotency_key="a1-capture")
    await provider.capture(captured, idempotency_key="a1-capture")  # a retry: nothing moves
    with pytest.raises(PaymentRejected):
        await provider.void(captured, idempotency_key="a1-void")  # captured: too late
    with pytest.raises(PaymentRejected):
        await provider.capture(captured, idempotency_key="a1-capture-again")
    await asyncio.gather(*(provider.void(voided, idempotency_key="a2-void") for _ in range(3)))
    with pytest.raises(PaymentRejected):
        await provider.capture(voided, idempotency_key="a2-capture")
    payments, operations = payment_tables(ledger.metadata)
    async with ledger.engine.connect() as conn:
        states = dict((await conn.execute(select(payments.c.payment_id, payments.c.state))).all())
        kinds = sorted((await conn.execute(select(operations.c.kind))).scalars().all())
    assert states == {captured: "captured", voided: "voided"}
    assert kinds == ["capture", "void"]


async def test_a_charge_captures_once_per_key_and_is_found_by_its_authorization_key(
    ledger: Database,
) -> None:
    """A charge (authorize and capture in one call) as crash recovery finds it: the same
    key's authorization answers the same payment, whose void is refused (it was taken)."""
    provider = SimulatedProvider(ledger, 0)
    usd = {"amount": Decimal("25.00"), "currency": "USD", "token": None}
    ids = await asyncio.gather(*(provider.charge(idempotency_key="o-1", **usd) for _ in range(4)))
    assert len(set(ids)) == 1
    assert await provider.authorize(idempotency_key="o-1", **usd) == ids[0]
    with pytest.raises(PaymentRejected):
        await provider.void(ids[0], idempotency_key="o-1-void")
    # A key first used to authorize only: the charge takes that authorization.
    held = await provider.authorize(idempotency_key="o-2", **usd)
    assert await provider.charge(idempotency_key="o-2", **usd) == held
    assert await provider.charge(idempotency_key="o-2", **usd) == held  # a retry: nothing moves
    # Crash recovery voided the key's authorization before the request's own charge arrived:
    # the charge takes nothing and says so.
    voided = await provider.authorize(idempotency_key="o-5", **usd)
    await provider.void(voided, idempotency_key="o-5-void")
    with pytest.raises(PaymentRejected):
        await provider.charge(idempotency_key="o-5", **usd)
    with pytest.raises(PaymentDeclined):
        await provider.charge(idempotency_key="o-3", **{**usd, "token": "tok_card_declined"})
    with pytest.raises(PaymentUnavailable):
        await provider.charge(
            idempotency_key="o-4", **{**usd, "token": "tok_processor_unavailable"}
        )
    payments, operations = payment_tables(ledger.metadata)
    async with ledger.engine.connect() as conn:
        states = dict((await conn.execute(select(payments.c.payment_id, payments.c.state))).all())
        kinds = (await conn.execute(select(operations.c.kind))).scalars().all()
    assert sorted(states.values()) == ["captured", "captured", "declined", "voided"]
    assert {ids[0], held} <= set(states) and states[ids[0]] == states[held] == "captured"
    assert sorted(kinds) == ["capture", "void"]  # o-2's authorization taken once; o-5 voided
