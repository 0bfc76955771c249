"""What happens after a sale: ordering moved the ticket (the purchase completes, the seller's
payout becomes payable, both parties are emailed), or refused to (the buyer is refunded), and
refunds of resale buyers when the event is cancelled (API.md §6.5)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update

from contracts.resale import ResaleRefunded
from contracts.timeutil import utcnow
from services.kernel.db import UnitOfWork
from services.kernel.mail import queue_mail
from services.kernel.payments import PaymentProvider
from services.resale.models import events, listings, payouts, purchases, tickets, users
from services.resale.purchase import payment_key


async def _set_purchase(uow: UnitOfWork, listing_id: int, status: str, reason: str | None) -> Any:
    return (
        await uow.execute(
            update(purchases)
            .where(purchases.c.listing_id == listing_id, purchases.c.status == "processing")
            .values(status=status, failure_reason=reason, completed_at=utcnow())
            .returning(*purchases.c)
        )
    ).first()


async def _close(uow: UnitOfWork, purchase: Any, listing_state: str, payout_state: str) -> None:
    await uow.execute(
        update(listings)
        .where(listings.c.listing_id == purchase.listing_id)
        .values(state=listing_state, updated_at=utcnow())
    )
    await uow.execute(
        update(payouts)
        .where(payouts.c.purchase_id == purchase.purchase_id)
        .values(state=payout_state)
    )


async def transfer_recorded(listing_id: int, uow: UnitOfWork) -> None:
    """Ordering moved the ticket to the buyer (the projection is updated by the caller)."""
    purchase = await _set_purchase(uow, listing_id, "completed", None)
    if purchase is None:
        return
    await _close(uow, purchase, "sold", "payable")
    await _mail_parties(uow, purchase)


async def transfer_refused(
    listing_id: int, reason: str, uow: UnitOfWork, payments: PaymentProvider
) -> None:
    """The ticket was checked in or refunded before the transfer: the buyer gets the money
    back, the seller is owed nothing, the listing is over."""
    purchase = await _set_purchase(uow, listing_id, "failed", reason)
    if purchase is None:
        return
    await _close(uow, purchase, "cancelled", "cancelled")
    await refund(uow, purchase, payments, "transfer_refused")


async def refund(uow: UnitOfWork, purchase: Any, payments: PaymentProvider, reason: str) -> None:
    """Give the buyer the resale price back, once per purchase (the provider call is
    idempotent by key, so a retried handler does not move money twice)."""
    marked = await uow.execute(
        update(purchases)
        .where(purchases.c.purchase_id == purchase.purchase_id, purchases.c.refunded_at.is_(None))
        .values(refunded_at=utcnow())
        .returning(purchases.c.purchase_id)
    )
    if marked.first() is None or purchase.payment_id is None:
        return
    await payments.refund(
        purchase.payment_id,
        purchase.price,
        idempotency_key=payment_key(purchase.purchase_id, "refund"),
    )
    uow.emit(
        ResaleRefunded(
            listing_id=purchase.listing_id,
            ticket_id=purchase.ticket_id,
            buyer_id=purchase.buyer_id,
            amount=str(purchase.price),
            currency=purchase.currency,
            reason=reason,
        ),
        aggregate_id=purchase.ticket_id,
    )


async def refund_holders(uow: UnitOfWork, which: Any, payments: PaymentProvider) -> None:
    """Refund the latest completed resale purchase of each ticket (matching `which`) whose
    buyer still holds it: the current holder gets back what they paid here for it, once (an
    earlier purchase of theirs was paid back by the next buyer). None while a later sale is
    being transferred: its buyer paid the holder, and is refunded once the transfer is
    recorded (or the holder, if it is refused: `refund_if_void`)."""
    later = purchases.alias("later")
    rows = (
        await uow.execute(
            select(purchases)
            .join(tickets, tickets.c.ticket_id == purchases.c.ticket_id)
            .where(
                which,
                purchases.c.status == "completed",
                purchases.c.refunded_at.is_(None),
                purchases.c.buyer_id == tickets.c.owner_id,
                ~exists().where(
                    later.c.ticket_id == purchases.c.ticket_id,
                    later.c.status.in_(("processing", "completed")),
                    later.c.purchase_id > purchases.c.purchase_id,
                ),
            )
        )
    ).all()
    for purchase in rows:
        await refund(uow, purchase, payments, "event_cancelled")


async def _mail_parties(uow: UnitOfWork, purchase: Any) -> None:
    name = await uow.conn.scalar(
        select(events.c.name).where(events.c.event_id == purchase.event_id)
    )
    found = await uow.execute(
        select(users).where(users.c.user_id.in_([purchase.seller_id, purchase.buyer_id]))
    )
    # (a row a ban wrote before the user's registration has no address yet: nobody to mail)
    people = {u.user_id: u for u in found if u.email}
    price = f"{purchase.price:.2f} {purchase.currency}"
    if seller := people.get(purchase.seller_id):
        await queue_mail(
            uow,
            seller.email,
            f"Your ticket for {name} was sold",
            f"Hello {seller.first_name},\n\nYour resale ticket #{purchase.ticket_id} for {name} "
            f"was sold for {price}. Your old ticket code no longer works.\n",
        )
    if buyer := people.get(purchase.buyer_id):
        await queue_mail(
            uow,
            buyer.email,
            f"Your ticket for {name}",
            f"Hello {buyer.first_name},\n\nYou bought ticket #{purchase.ticket_id} for {name} "
            f"for {price} (purchase #{purchase.purchase_id}). Download it from your tickets.\n",
        )


async def refund_if_void(uow: UnitOfWork, ticket_id: int, payments: PaymentProvider) -> None:
    """After a sale of the ticket settled (transferred or refused): if ordering voided it
    meanwhile (its TicketRefunded applied here first, as when the settling event was parked
    for a retry), refund its holder now, as TicketRefunded would have done after it."""
    status = await uow.conn.scalar(select(tickets.c.status).where(tickets.c.ticket_id == ticket_id))
    if status == "refunded":
        await refund_holders(uow, purchases.c.ticket_id == ticket_id, payments)
