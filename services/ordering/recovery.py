"""Checkouts a crashed process left half done (API.md §8.4: charged once, nothing lost).

A checkout whose process died (kill -9, OOM, a lost machine) leaves its order `pending`, its
cart flagged "in progress" and maybe money authorized or captured. Once such an order is older
than any live checkout can be, it is finished here, like resale's stalled purchases:
authorize again with the order's key (the provider answers the first authorization, or makes
one), then void it. A void the provider refuses means the money was captured before the
crash: the sale stands and the order is completed (refunded if its holds are gone), unless
the payment was refunded already (the checkout gave it back and died before failing the
order: it fails now). Otherwise
the order fails, nothing is charged, and the cart (with its holds) can be checked out again.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text

from contracts.timeutil import utcnow
from services.kernel.db import Database
from services.kernel.errors import BadRequest
from services.kernel.idempotency import claimed
from services.kernel.payments import PaymentDeclined, PaymentProvider, PaymentRejected
from services.ordering.checkout import Checkout, PlacedOrder, Settled, _complete, _fail
from services.ordering.models import orders

log = logging.getLogger("resellio.ordering.recovery")


async def recover_stalled(db: Database, payments: PaymentProvider, after: timedelta) -> int:
    async with db.engine.connect() as conn:
        stalled = (
            await conn.execute(
                select(orders).where(
                    orders.c.status == "pending", orders.c.created_at < utcnow() - after
                )
            )
        ).all()
    for order in stalled:
        # One instance per order: a session lock held while this instance finishes it.
        async with db.engine.connect() as lock:
            key = f"order-recovery-{order.order_id}"
            if not await lock.scalar(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}):
                continue
            try:
                await _finish(db, payments, order.order_id)
            finally:
                await lock.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
    return len(stalled)


def _request_of(order: Any) -> tuple[int, str, str, str] | None:
    """The Idempotency-Key of the checkout that placed the order, as its claim names it."""
    if order.request_key is None:
        return None
    return order.user_id, "POST", order.request_path, order.request_key


async def _finish(db: Database, payments: PaymentProvider, order_id: int) -> None:
    """The order settled. The checkout that placed it never answered, so its key is answered
    here: completed, it is the checkout's 200 (stored with the sale); failed, the key is freed
    (a retry is a new attempt), as that checkout's own answer would have done."""
    async with db.engine.connect() as conn:
        order = (await conn.execute(select(orders).where(orders.c.order_id == order_id))).one()
    if order.status != "pending":  # finished meanwhile
        return
    request = _request_of(order)
    key = f"order-{order_id}"
    try:
        payment_id = await payments.authorize(
            idempotency_key=key, amount=order.total_amount, currency=order.currency, token=None
        )
    except PaymentDeclined:
        await _fail(db, order.user_id, order_id, "payment_declined", request)
        return
    try:
        await payments.void(payment_id, idempotency_key=f"{key}-void")
    except PaymentRejected:  # captured before the crash: the sale stands, unless given back
        if await payments.refunded(payment_id) > 0:
            # The checkout (or an earlier recovery) refunded it, the cart having changed under
            # the payment, and died before failing the order: it stays failed, whatever the
            # cart holds now (a line added back would otherwise get tickets for free).
            await _fail(db, order.user_id, order_id, "cart_changed", request)
            return
        placed = PlacedOrder(order_id=order_id, total=order.total_amount, currency=order.currency)
        try:
            with claimed(request) if request else nullcontext():  # its answer, with the sale
                await _complete(db, Checkout(user_id=order.user_id), placed, payment_id, utcnow())
        except Settled:  # the checkout itself finished it meanwhile
            return
        except BadRequest:
            await payments.refund(payment_id, order.total_amount, idempotency_key=f"{key}-refund")
            await _fail(db, order.user_id, order_id, "cart_changed", request)
        log.info("completed order %s that a crashed checkout had charged", order_id)
        return
    await _fail(db, order.user_id, order_id, "checkout_interrupted", request)
    log.info("failed order %s that a crashed checkout left uncharged", order_id)


async def recover_forever(db: Database, payments: PaymentProvider, after: timedelta) -> None:
    while True:
        try:
            await recover_stalled(db, payments, after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checkout recovery failed")
        await asyncio.sleep(min(30.0, max(0.5, after.total_seconds() / 2)))
