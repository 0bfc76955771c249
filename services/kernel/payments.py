"""The payment-provider port (ordering and resale) and the simulated card processor that ships.

A provider authorizes an amount, then captures it, or does both in one call (a charge); voids
an authorization that is not wanted, or refunds (part of) a capture. Every call takes an
idempotency key: the same key always gives the same result and moves money at most once, as
with a real processor, so a caller may safely retry after a crash or a timeout.

The simulated provider keeps its ledger in the calling service's schema (`payments`,
`payment_operations`), so it survives restarts and every instance sees the same charges.
Test cards (the `payment_token` a client sends):
  - `tok_card_declined` or `4000000000000002`: authorization declined (402 "Payment declined");
  - `tok_processor_unavailable`: the processor cannot be reached (503);
  - anything else, or no token: approved.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from decimal import Decimal
from typing import Protocol

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Numeric,
    Table,
    Text,
    text,
)

from services.kernel.db import Database

DECLINED_TOKENS = frozenset({"tok_card_declined", "4000000000000002"})
# The most one payment moves (what the ledgers and an order's total hold); a processor
# declines more, as real ones decline an amount over their limit.
MAX_CHARGE = Decimal("9999999999.99")
UNAVAILABLE_TOKENS = frozenset({"tok_processor_unavailable"})


class PaymentDeclined(Exception):
    """The card was declined; nothing was charged."""

    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id} declined")
        self.payment_id = payment_id


class PaymentUnavailable(Exception):
    """The processor did not answer; nothing was charged (retry later with the same key)."""


class PaymentRejected(Exception):
    """An operation that the payment's state does not allow (e.g. refunding more than paid)."""


class PaymentProvider(Protocol):
    async def authorize(
        self, *, idempotency_key: str, amount: Decimal, currency: str, token: str | None
    ) -> str:
        """Reserve `amount` on the card; the payment id. Raises PaymentDeclined/Unavailable."""

    async def capture(self, payment_id: str, *, idempotency_key: str) -> None:
        """Take the authorized amount."""

    async def charge(
        self, *, idempotency_key: str, amount: Decimal, currency: str, token: str | None
    ) -> str:
        """Authorize and capture in one call (a sale); the payment id. `idempotency_key` is the
        authorization's: `authorize` with it finds the same payment, so a void that follows is
        refused as for any captured payment. Raises PaymentDeclined/Unavailable, or
        PaymentRejected when the key's payment was voided (nothing is taken)."""

    async def void(self, payment_id: str, *, idempotency_key: str) -> None:
        """Drop an authorization that was not captured."""

    async def refund(self, payment_id: str, amount: Decimal, *, idempotency_key: str) -> None:
        """Give back part or all of a captured amount."""

    async def refunded(self, payment_id: str) -> Decimal:
        """How much of the payment has been given back (a processor's lookup of a payment)."""


def payment_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The simulated processor's ledger in the metadata's schema (created once per metadata)."""
    schema = metadata.schema
    if f"{schema}.payments" in metadata.tables:
        return metadata.tables[f"{schema}.payments"], metadata.tables[
            f"{schema}.payment_operations"
        ]
    payments = Table(
        "payments",
        metadata,
        Column("payment_id", Text, primary_key=True),
        Column("authorize_key", Text, nullable=False, unique=True),
        Column("amount", Numeric(12, 2), nullable=False),
        Column("currency", Text, nullable=False),
        # authorized | declined | captured | voided
        Column("state", Text, nullable=False),
        Column("refunded", Numeric(12, 2), nullable=False, server_default=text("0")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )
    operations = Table(
        "payment_operations",
        metadata,
        Column("idempotency_key", Text, primary_key=True),
        Column("payment_id", Text, nullable=False, index=True),
        Column("kind", Text, nullable=False),  # capture | void | refund
        Column("amount", Numeric(12, 2)),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )
    return payments, operations


_AUTHORIZE = """
WITH created AS (
  INSERT INTO "{schema}".payments (payment_id, authorize_key, amount, currency, state)
  VALUES ($1, $2, $3, $4, $5)
  ON CONFLICT (authorize_key) DO NOTHING
  RETURNING payment_id, state
)
SELECT payment_id, state FROM created
"""
# The same key answers what the first call answered (a second statement: it sees the row the
# insert above conflicted with, which that statement's snapshot may not).
_AUTHORIZED = 'SELECT payment_id, state FROM "{schema}".payments WHERE authorize_key = $1'
_RECORD = """
INSERT INTO "{schema}".payment_operations (idempotency_key, payment_id, kind, amount)
VALUES ($1, $2, $3, $4)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key
"""
_REFUND = """
UPDATE "{schema}".payments SET refunded = refunded + $2, updated_at = now()
WHERE payment_id = $1 AND state = 'captured' AND refunded + $2 <= amount
RETURNING payment_id
"""
# A capture or void moves the payment out of `authorized` and records its key, in one
# statement: a retry (or a racing twin) with the key finds the payment moved already and
# changes nothing; `$3` is the state it moves to.
_TRANSITION = """
WITH moved AS (
  UPDATE "{schema}".payments SET state = $3, updated_at = now()
  WHERE payment_id = $1 AND state = 'authorized'
  RETURNING payment_id
), recorded AS (
  INSERT INTO "{schema}".payment_operations (idempotency_key, payment_id, kind)
  SELECT $2, payment_id, $4 FROM moved
)
SELECT count(*) FROM moved
"""
_DONE_UNDER = 'SELECT kind FROM "{schema}".payment_operations WHERE idempotency_key = $1'
_REFUNDED = 'SELECT refunded FROM "{schema}".payments WHERE payment_id = $1'
_TARGET_STATE = {"capture": "captured", "void": "voided"}


@functools.cache
def _statements(schema: str) -> dict[str, str]:
    """The ledger's statements for a schema, built once (a checkout makes its provider)."""
    return {
        name: sql.format(schema=schema)
        for name, sql in (
            ("authorize", _AUTHORIZE),
            ("authorized", _AUTHORIZED),
            ("record", _RECORD),
            ("refund", _REFUND),
            ("transition", _TRANSITION),
            ("done_under", _DONE_UNDER),
            ("refunded", _REFUNDED),
        )
    }


class SimulatedProvider:
    """Behaves like a card processor: it takes time, declines test cards, and is idempotent."""

    def __init__(self, db: Database, latency_ms: float = 30.0) -> None:
        self.db = db
        self.latency_s = latency_ms / 1000
        self.sql = _statements(db.schema)

    async def _network(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    async def authorize(
        self, *, idempotency_key: str, amount: Decimal, currency: str, token: str | None
    ) -> str:
        payment_id, _ = await self._open(idempotency_key, amount, currency, token, "authorized")
        return payment_id

    async def charge(
        self, *, idempotency_key: str, amount: Decimal, currency: str, token: str | None
    ) -> str:
        payment_id, state = await self._open(idempotency_key, amount, currency, token, "captured")
        if state == "authorized":  # the key's payment was opened by `authorize`: take it now
            await self.capture(payment_id, idempotency_key=f"{idempotency_key}-charge")
        elif state != "captured":  # voided (by crash recovery, say): nothing was taken
            raise PaymentRejected(f"payment {payment_id} is {state}")
        return payment_id

    async def _open(
        self, key: str, amount: Decimal, currency: str, token: str | None, approved: str
    ) -> tuple[str, str]:
        """The payment of authorization key `key`, opened in state `approved` unless the card
        is declined, or as the key's first call left it."""
        await self._network()
        if token in UNAVAILABLE_TOKENS:
            raise PaymentUnavailable("processor unreachable")
        if amount > MAX_CHARGE:
            raise PaymentDeclined("amount_too_large")
        state = "declined" if token in DECLINED_TOKENS else approved
        # Idempotent statements: no transaction block (and no BEGIN/COMMIT round trips).
        async with self.db.driver() as db:
            row = await db.fetchrow(
                self.sql["authorize"], f"pay_{secrets.token_hex(12)}", key, amount, currency, state
            )
            if row is None:
                row = await db.fetchrow(self.sql["authorized"], key)
        assert row is not None
        if row.state == "declined":
            raise PaymentDeclined(row.payment_id)
        return str(row.payment_id), str(row.state)

    async def _transition(self, payment_id: str, key: str, kind: str) -> None:
        await self._network()
        async with self.db.driver() as db:
            moved = await db.fetchval(
                self.sql["transition"], payment_id, key, _TARGET_STATE[kind], kind
            )
            if moved:
                return
            # Nothing moved: applied before under this key (a retry), or not allowed.
            if await db.fetchval(self.sql["done_under"], key) != kind:
                raise PaymentRejected(f"cannot {kind} payment {payment_id}")

    async def capture(self, payment_id: str, *, idempotency_key: str) -> None:
        await self._transition(payment_id, idempotency_key, "capture")

    async def void(self, payment_id: str, *, idempotency_key: str) -> None:
        await self._transition(payment_id, idempotency_key, "void")

    async def refund(self, payment_id: str, amount: Decimal, *, idempotency_key: str) -> None:
        await self._network()
        async with self.db.driver() as db, db.transaction():
            key = idempotency_key
            if await db.fetchval(self.sql["record"], key, payment_id, "refund", amount) is None:
                return  # already applied under this key: no second movement of money
            if await db.fetchval(self.sql["refund"], payment_id, amount) is None:
                raise PaymentRejected(f"cannot refund payment {payment_id}")

    async def refunded(self, payment_id: str) -> Decimal:
        await self._network()
        async with self.db.driver() as db:
            found = await db.fetchval(self.sql["refunded"], payment_id)
        return Decimal("0") if found is None else Decimal(found)
