"""What ordering does when other services act: a cancelled event is refunded, a deleted ticket
type stops selling, a resale moves the ticket to its buyer with a new code.

Each reaction is idempotent on its own (a repeat finds nothing left to do), on top of the
kernel inbox that already drops a redelivered event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, select, update

from contracts.catalog import EventCancelled, ParticipantsNotified, TicketTypeDeleted
from contracts.envelope import Envelope
from contracts.ordering import (
    HoldReleased,
    TicketRefunded,
    TicketTransferred,
    TicketTransferRefused,
)
from contracts.resale import ListingSold
from services.kernel.db import UnitOfWork
from services.kernel.mail import queue_mail
from services.kernel.projections import NotProjectedYet
from services.ordering import holds
from services.ordering.checkout import new_ticket_code
from services.ordering.config import payment_provider
from services.ordering.models import events, listings, orders, ticket_types, tickets, users
from services.ordering.projections import close_listing

log = logging.getLogger("resellio.ordering.reactions")


async def on_ticket_type_deleted(
    event: TicketTypeDeleted, envelope: Envelope, uow: UnitOfWork
) -> None:
    deleted = await uow.execute(
        update(ticket_types)
        .where(ticket_types.c.type_id == event.type_id)
        .values(deleted=True)
        .returning(ticket_types.c.type_id)
    )
    if deleted.first() is None:
        raise NotProjectedYet(f"ticket type {event.type_id}")
    await holds.drop_lines(uow, HoldReleased, "c.type_id = $1", event.type_id)


async def on_event_cancelled(event: EventCancelled, envelope: Envelope, uow: UnitOfWork) -> None:
    """Stop sales, release holds, refund every primary purchase, void the tickets."""
    await _cancelled_before_money_moves(uow, event.event_id)
    cancelled = await uow.execute(
        update(events)
        .where(events.c.event_id == event.event_id)
        .values(status="cancelled")
        .returning(events.c.name)
    )
    row = cancelled.first()
    if row is None:
        raise NotProjectedYet(f"event {event.event_id}")
    await holds.drop_lines(
        uow,
        HoldReleased,
        "c.type_id IN (SELECT type_id FROM ordering.ticket_types WHERE event_id = $1)",
        event.event_id,
    )
    to_refund = (
        await uow.execute(
            select(
                tickets,
                orders.c.payment_id,
                orders.c.user_id.label("buyer_id"),
                exists()
                .where(listings.c.ticket_id == tickets.c.ticket_id, listings.c.state == "sold")
                .label("resold"),
            )
            .join(orders, orders.c.order_id == tickets.c.order_id)
            .where(tickets.c.event_id == event.event_id, tickets.c.status != "refunded")
            .order_by(tickets.c.ticket_id)
            .with_for_update(of=tickets)
        )
    ).all()
    by_order: dict[int, list[Any]] = defaultdict(list)
    for t in to_refund:
        by_order[t.order_id].append(t)
    provider = payment_provider(uow.db)
    for order_id, order_tickets in by_order.items():
        # The current holder gets back what they paid (API.md §6.5): a ticket resold since is
        # refunded by resale to its buyer, so the primary buyer is refunded only for the tickets
        # they still hold and never sold (they were paid by the resale buyer for the others;
        # one they bought back is refunded by resale what they paid for it then).
        held = [t for t in order_tickets if t.owner_id == t.buyer_id and not t.resold]
        amount = sum((t.original_price for t in held), Decimal("0.00"))
        if amount > 0:
            # One refund per order and event: a retry of this handler repeats the same key.
            await provider.refund(
                order_tickets[0].payment_id,
                amount,
                idempotency_key=f"refund-order-{order_id}-event-{event.event_id}",
            )
        await _void(uow, order_id, order_tickets, {t.ticket_id for t in held})
        if held:
            await _refund_mail(uow, order_tickets[0].buyer_id, row.name, order_id, amount, held)


async def _cancelled_before_money_moves(uow: UnitOfWork, event_id: int) -> None:
    """The event's status committed as cancelled on a transaction of its own, before any
    refund goes to the processor (this handler's transaction commits after them). A resale
    transfer of one of its tickets, waiting for the ticket's row or arriving after a crash of
    this handler and before its retry, is then refused (`on_listing_sold`): the retry finds
    the tickets held as the first attempt did, and refunds the same amounts under the same
    keys. Otherwise the ticket would count as resold on the retry, its first refund standing
    beside the seller's payout and the resale buyer's refund. In a batch (or a replay's pack)
    an earlier event may hold the row in the batch's own transaction: a cancellation fails
    such a batch at once, so that its events are applied one at a time (and it alone); the
    lock timeout bounds any other wait."""
    async with uow.committed_first() as early:
        await early.execute(
            update(events).where(events.c.event_id == event_id).values(status="cancelled")
        )


async def _void(
    uow: UnitOfWork, order_id: int, order_tickets: list[Any], refunded_here: set[int]
) -> None:
    await uow.execute(
        update(tickets)
        .where(tickets.c.ticket_id.in_([t.ticket_id for t in order_tickets]))
        .values(status="refunded")
    )
    for t in order_tickets:
        uow.emit(
            TicketRefunded(
                ticket_id=t.ticket_id,
                owner_id=t.owner_id,
                event_id=t.event_id,
                amount=str(t.original_price if t.ticket_id in refunded_here else Decimal("0.00")),
                currency=t.currency,
                reason="event_cancelled"
                if t.ticket_id in refunded_here
                else "event_cancelled_resold",
            ),
            aggregate_id=t.ticket_id,
        )
    still_valid = (
        await uow.execute(
            select(func.count())
            .select_from(tickets)
            .where(tickets.c.order_id == order_id, tickets.c.status != "refunded")
        )
    ).scalar_one()
    await uow.execute(
        update(orders)
        .where(orders.c.order_id == order_id)
        .values(status="partially_refunded" if still_valid else "refunded")
    )


async def _email_of(uow: UnitOfWork, user_id: int) -> Any:
    return (await uow.execute(select(users).where(users.c.user_id == user_id))).first()


async def _refund_mail(
    uow: UnitOfWork, buyer_id: int, event_name: str, order_id: int, amount: Decimal, ts: list[Any]
) -> None:
    user = await _email_of(uow, buyer_id)
    if user is None:
        log.warning("no email known for user %s; refund notice not sent", buyer_id)
        return
    await queue_mail(
        uow,
        user.email,
        f"Refund: {event_name} has been cancelled",
        f"Hello {user.first_name},\n\n'{event_name}' has been cancelled by its organizer.\n"
        f"We refunded {amount} {ts[0].currency} for {len(ts)} ticket(s) of order #{order_id}"
        f" ({', '.join(f'#{t.ticket_id}' for t in ts)}). These tickets are no longer valid.\n",
    )


async def on_listing_sold(event: ListingSold, envelope: Envelope, uow: UnitOfWork) -> None:
    """Move the ticket to its buyer with a new code (the seller's code stops working), or
    refuse when it was checked in or refunded meanwhile, or its event cancelled. Exactly
    once per listing."""
    ticket = (
        await uow.execute(
            select(tickets, events.c.status.label("event_status"))
            .join(events, events.c.event_id == tickets.c.event_id)
            .where(tickets.c.ticket_id == event.ticket_id)
            .with_for_update(of=tickets)
        )
    ).first()
    if ticket is None:
        raise NotProjectedYet(f"ticket {event.ticket_id}")
    refusal = None
    if ticket.status != "valid":
        refusal = "ticket_checked_in" if ticket.status == "used" else "ticket_refunded"
    elif ticket.event_status == "cancelled":  # its refunds are under way (the buyer's too)
        refusal = "event_cancelled"
    elif ticket.owner_id != event.seller_id:
        refusal = "seller_not_owner"
    state = "refused" if refusal else "sold"
    if not await close_listing(uow, event.listing_id, event.ticket_id, state):
        return  # this sale was applied (or refused) before
    if refusal:
        uow.emit(
            TicketTransferRefused(
                ticket_id=event.ticket_id, listing_id=event.listing_id, reason=refusal
            ),
            aggregate_id=event.ticket_id,
        )
        return
    await uow.execute(
        update(tickets)
        .where(tickets.c.ticket_id == event.ticket_id)
        .values(owner_id=event.buyer_id, code=new_ticket_code())
    )
    uow.emit(
        TicketTransferred(
            ticket_id=event.ticket_id,
            listing_id=event.listing_id,
            from_user_id=event.seller_id,
            to_user_id=event.buyer_id,
            price=event.price,
            currency=event.currency,
        ),
        aggregate_id=event.ticket_id,
    )
    await _transfer_mails(uow, event)


async def _transfer_mails(uow: UnitOfWork, event: ListingSold) -> None:
    """The transfer notice: the buyer's ticket (with its new code) is ready. The seller's sold
    notice and the buyer's payment receipt are resale's (it knows the payout and the charge)."""
    buyer = await _email_of(uow, event.buyer_id)
    if buyer is not None:
        await queue_mail(
            uow,
            buyer.email,
            f"Ticket #{event.ticket_id} is now yours",
            f"Hello {buyer.first_name},\n\nticket #{event.ticket_id} has been transferred to you."
            " Download it (with its new QR code) from your account.\n",
        )


async def on_participants_notified(
    event: ParticipantsNotified, envelope: Envelope, uow: UnitOfWork
) -> None:
    """Email the organizer's message once to every holder of a valid ticket of the event: the
    holders catalog counted (API.md §6.8), a ticket checked in included (its holder is at the
    event; a refund is what makes a ticket no longer valid, §9.2)."""
    holders = await uow.execute(
        select(users.c.email, users.c.first_name, events.c.name)
        .select_from(tickets)
        .join(users, users.c.user_id == tickets.c.owner_id)
        .join(events, events.c.event_id == tickets.c.event_id)
        .where(tickets.c.event_id == event.event_id, tickets.c.status.in_(("valid", "used")))
        .distinct()
    )
    for holder in holders:
        subject = f"{'URGENT: ' if event.urgent else ''}News about {holder.name}"
        await queue_mail(
            uow, holder.email, subject, f"Hello {holder.first_name},\n\n{event.message}\n"
        )
