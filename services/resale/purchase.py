"""Buying a listed ticket (API.md §10.3): sold at most once under any concurrency.

1. claim: one conditional UPDATE moves the listing active → purchasing (the losers of a race
   get 409) and records the purchase as `charging`;
2. charge the buyer through the payment port (idempotency key per purchase); a declined or
   failed charge puts the listing back to active;
3. sale: the purchase becomes `processing`, the seller's payout is recorded and ListingSold
   goes out, in one transaction;
4. ordering moves the ticket and answers TicketTransferred (or TicketTransferRefused); the
   consumers record it (services/resale/settlement.py) and the request answers from that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select, update

from contracts.resale import ListingSold
from contracts.timeutil import utcnow
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
)
from services.kernel.idempotency import KEEP_FOR, REUSED
from services.kernel.payments import (
    PaymentDeclined,
    PaymentProvider,
    PaymentRejected,
    PaymentUnavailable,
)
from services.resale.listings import TICKET_NOT_FOUND, withdrawn_after_claim
from services.resale.models import listings, payouts, purchases
from services.resale.tickets import latest_listing, sellable, ticket_row

NO_LONGER_FOR_SALE = "Ticket is no longer for sale"
NOT_FOR_RESALE = "Ticket is not for resale"
# A claim whose request has not charged within this time died with its process.
STALLED_AFTER = timedelta(minutes=1)


@dataclass(frozen=True)
class BuyTicket:
    ticket_id: int
    buyer_id: int
    expected_price: Decimal | None
    payment_token: str | None
    idempotency_key: str | None


def payment_key(purchase_id: int, step: str) -> str:
    return f"resale-purchase-{purchase_id}-{step}"


async def earlier_purchase(db: Database, cmd: BuyTicket, following: bool) -> Any:
    """The purchase this request's Idempotency-Key started, to be followed to its answer, or
    None for a new one (§1.6). `following`: the key's stored answer is a 202, and its newest
    purchase is followed whatever became of it. Otherwise the key was free (new, expired, or
    freed by an answer that is not kept, a 503 say): only a purchase a crashed request left
    unanswered within the key's 24 h is followed; one that failed is tried again, anew. 409 if
    the purchase followed is of another ticket."""
    if cmd.idempotency_key is None:
        return None
    async with db.engine.connect() as conn:
        stmt = (
            select(purchases)
            .where(
                purchases.c.buyer_id == cmd.buyer_id,
                purchases.c.idempotency_key == cmd.idempotency_key,
            )
            .order_by(purchases.c.purchase_id.desc())
            .limit(1)
        )
        found = (await conn.execute(stmt)).first()
    if found is None:
        return None
    if not following and (found.status == "failed" or found.created_at < utcnow() - KEEP_FOR):
        return None
    if found.ticket_id != cmd.ticket_id:
        raise Conflict(REUSED)
    return found


async def claim(cmd: BuyTicket, uow: UnitOfWork) -> Any:
    """Errors in the order of §10.3; on success the listing is ours and a purchase exists."""
    row = await ticket_row(uow.conn, cmd.ticket_id)
    if row is None:
        raise NotFound(TICKET_NOT_FOUND)
    if row.owner_id == cmd.buyer_id:
        raise BadRequest("Cannot buy your own ticket")
    for _ in range(3):  # again if the listing was withdrawn and the ticket listed anew
        listing = await latest_listing(uow.conn, cmd.ticket_id)
        if listing is None or listing.state == "cancelled":
            raise BadRequest(NOT_FOR_RESALE)
        if not sellable(row):
            raise BadRequest(NOT_FOR_RESALE)
        if cmd.expected_price is not None and cmd.expected_price != listing.price:
            raise Conflict("Price changed")
        if listing.state != "active":  # claimed or sold: another buyer won
            raise Conflict(NO_LONGER_FOR_SALE)
        # A change in between is bought at the new price unless the buyer named the one seen.
        claimed = (
            await uow.execute(
                update(listings)
                .where(
                    listings.c.listing_id == listing.listing_id,
                    listings.c.state == "active",
                    *(
                        ()
                        if cmd.expected_price is None
                        else (listings.c.price == cmd.expected_price,)
                    ),
                )
                .values(state="purchasing", updated_at=utcnow())
                .returning(listings.c.listing_id, listings.c.price)
            )
        ).first()
        if claimed is not None:
            break
        now = await latest_listing(uow.conn, cmd.ticket_id)
        if now.listing_id == listing.listing_id and now.state == "active":
            raise Conflict("Price changed")  # repriced from the price the buyer named
    else:
        raise Conflict(NO_LONGER_FOR_SALE)
    purchase = (
        await uow.execute(
            purchases.insert()
            .values(
                listing_id=listing.listing_id,
                ticket_id=listing.ticket_id,
                event_id=listing.event_id,
                buyer_id=cmd.buyer_id,
                seller_id=listing.seller_id,
                price=claimed.price,
                currency=listing.currency,
                status="charging",
                idempotency_key=cmd.idempotency_key,
            )
            .returning(*purchases.c)
        )
    ).one()
    await uow.commit()
    return purchase


async def charge(purchase: Any, token: str | None, db: Database, payments: PaymentProvider) -> str:
    """Charge the price (authorized and captured in one call); on failure the listing is for
    sale again."""
    try:
        return await payments.charge(
            idempotency_key=payment_key(purchase.purchase_id, "authorize"),
            amount=purchase.price,
            currency=purchase.currency,
            token=token,
        )
    except PaymentDeclined as exc:
        await release(db, purchase, "payment_declined")
        raise PaymentRequired("Payment declined") from exc
    except (PaymentUnavailable, PaymentRejected) as exc:  # nothing was taken
        await release(db, purchase, "payment_unavailable")
        raise ServiceUnavailable("Payment service unavailable") from exc


async def release(db: Database, purchase: Any, reason: str) -> None:
    """The charge did not happen (or was given back): the purchase failed and the listing is
    active again, unless it was withdrawn meanwhile (`withdrawn_after_claim`)."""
    async with db.unit_of_work() as uow:
        failed = await uow.execute(
            update(purchases)
            .where(
                purchases.c.purchase_id == purchase.purchase_id, purchases.c.status == "charging"
            )
            .values(status="failed", failure_reason=reason, completed_at=utcnow())
        )
        if not failed.rowcount:  # released already (by crash recovery): the listing may be
            return  # another buyer's by now
        await withdrawn_after_claim(uow, purchase.listing_id)
        await uow.commit()


async def charged(
    db: Database, purchase: Any, payment_id: str, fee_percent: Decimal, payments: PaymentProvider
) -> None:
    """Charged: the sale stands (`record_sale`), unless the listing was withdrawn while the
    buyer's charge ran (the seller banned, the event cancelled, the ticket refunded or used:
    `withdrawn_for`); then the charge is given back, the purchase fails and the listing is
    cancelled for that reason (409 "no longer for sale", as §10.3 answers a ticket checked in
    or refunded before its transfer). The listing's row is locked while this is decided, so a
    withdrawal either comes first and is seen, or waits and finds the sale under way (then
    the transfer and the cancellation's refunds settle it). A crash after the refund leaves
    the purchase `charging`: recovery comes here again, and the refund is made once (its key)."""
    async with db.unit_of_work() as uow:
        withdrawn_for = await uow.conn.scalar(
            select(listings.c.withdrawn_for)
            .where(listings.c.listing_id == purchase.listing_id)
            .with_for_update()
        )
        if withdrawn_for is None:
            await record_sale(purchase, payment_id, fee_percent, uow)
            return
    await payments.refund(
        payment_id, purchase.price, idempotency_key=payment_key(purchase.purchase_id, "refund")
    )
    await release(db, purchase, "withdrawn")
    raise Conflict(NO_LONGER_FOR_SALE)


async def record_sale(
    purchase: Any, payment_id: str, fee_percent: Decimal, uow: UnitOfWork
) -> None:
    """Charged: the sale stands. Payout and ListingSold in the same transaction."""
    await uow.execute(
        update(purchases)
        .where(purchases.c.purchase_id == purchase.purchase_id)
        .values(status="processing", payment_id=payment_id)
    )
    fee = (purchase.price * fee_percent / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
    await uow.execute(
        payouts.insert().values(
            purchase_id=purchase.purchase_id,
            seller_id=purchase.seller_id,
            gross=purchase.price,
            fee=fee,
            amount=purchase.price - fee,
            currency=purchase.currency,
            state="pending",
        )
    )
    uow.emit(
        ListingSold(
            listing_id=purchase.listing_id,
            ticket_id=purchase.ticket_id,
            seller_id=purchase.seller_id,
            buyer_id=purchase.buyer_id,
            price=str(purchase.price),
            currency=purchase.currency,
            purchase_id=purchase.purchase_id,
        ),
        aggregate_id=purchase.ticket_id,
    )
    await uow.commit()


async def purchase_status(db: Database, purchase_id: int) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.scalar(
            select(purchases.c.status).where(purchases.c.purchase_id == purchase_id)
        )


async def wait_for_transfer(db: Database, purchase_id: int, timeout_s: float) -> str:
    """Poll our own record until ordering's answer has been handled here (bounded)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        status = await purchase_status(db, purchase_id)
        if status in ("completed", "failed") or time.monotonic() >= deadline:
            return status or "processing"
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def settle_answer(db: Database, purchase: Any, timeout_s: float) -> str:
    """completed (200), processing (202), or the purchase's failure as its error."""
    status = await wait_for_transfer(db, purchase.purchase_id, timeout_s)
    if status != "failed":
        return status
    reason = await _failure_reason(db, purchase.purchase_id)
    if reason == "payment_declined":
        raise PaymentRequired("Payment declined")
    if reason == "payment_unavailable":
        raise ServiceUnavailable("Payment service unavailable")
    raise Conflict(NO_LONGER_FOR_SALE)  # another buyer won, or withdrawn during the charge


async def _failure_reason(db: Database, purchase_id: int) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.scalar(
            select(purchases.c.failure_reason).where(purchases.c.purchase_id == purchase_id)
        )


async def recover_stalled(
    db: Database,
    payments: PaymentProvider,
    fee_percent: Decimal,
    after: timedelta = STALLED_AFTER,
) -> int:
    """Purchases left `charging` by a crashed request (listing stuck in purchasing): void the
    authorization and put the listing back; if the money was already captured, the sale
    stands and is completed instead. Safe with several instances (the steps are idempotent)."""
    async with db.engine.connect() as conn:
        stalled = (
            await conn.execute(
                select(purchases).where(
                    purchases.c.status == "charging",
                    purchases.c.created_at < utcnow() - after,
                )
            )
        ).all()
    for purchase in stalled:
        try:
            # The same key answers the first authorization (or makes one, voided at once).
            payment_id = await payments.authorize(
                idempotency_key=payment_key(purchase.purchase_id, "authorize"),
                amount=purchase.price,
                currency=purchase.currency,
                token=None,
            )
        except PaymentDeclined:
            await release(db, purchase, "payment_declined")
            continue
        try:
            await payments.void(
                payment_id, idempotency_key=payment_key(purchase.purchase_id, "void")
            )
        except PaymentRejected:  # captured before the crash: finish the sale
            with contextlib.suppress(Conflict):  # withdrawn meanwhile: given back instead
                await charged(db, purchase, payment_id, fee_percent, payments)
            continue
        await release(db, purchase, "payment_unavailable")
    return len(stalled)
