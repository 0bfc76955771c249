"""Checkout (API.md §8.4): place the order, charge it, then issue the tickets in one transaction.

1. Place (one transaction): flag the cart as checking out (409 for a second checkout of the
   same cart, on any instance), check R1–R5 per line, record a pending order (OrderPlaced).
2. Charge through the payment provider (authorize + capture), outside any transaction, with
   idempotency keys derived from the order, so the provider never charges an order twice.
3. Complete (one transaction): held inventory → sold, tickets issued with fresh codes, cart
   lines removed, order completed (OrderCompleted, TicketPurchased per ticket, mail).
A declined card fails the order and keeps the cart and its holds (402).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import delete, select, update

from contracts.ordering import (
    HoldReleased,
    OrderCompleted,
    OrderFailed,
    OrderLine,
    OrderPlaced,
    TicketPurchased,
)
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import BadRequest, Conflict, PaymentRequired, ServiceUnavailable
from services.kernel.mail import queue_mail
from services.kernel.payments import (
    PaymentDeclined,
    PaymentProvider,
    PaymentRejected,
    PaymentUnavailable,
)
from services.ordering import holds
from services.ordering.cart import CartRules
from services.ordering.domain import (
    OFFER_COLUMNS,
    Offer,
    check_on_sale,
    not_enough,
    offer_from,
    over_limit,
    tickets_of_customer,
)
from services.ordering.models import (
    cart_items,
    carts,
    events,
    order_items,
    orders,
    ticket_types,
    tickets,
    users,
)

log = logging.getLogger("resellio.ordering.checkout")
Clock = Callable[[], datetime]


class Checkout(msgspec.Struct, frozen=True):
    user_id: int
    payment_token: str | None = None
    # From the access token: where the confirmation goes if auth's UserRegistered is not here yet.
    email: str | None = None
    first_name: str = ""


class PlacedOrder(msgspec.Struct, frozen=True):
    order_id: int
    total: Decimal
    currency: str


def new_ticket_code() -> str:
    """192 random bits: unguessable, and only ever shown in the owner's PDF."""
    return secrets.token_urlsafe(24)


async def checkout(
    cmd: Checkout,
    db: Database,
    payments: PaymentProvider,
    rules: CartRules,
    clock: Clock,
    refresh: Callable[[], Awaitable[None]],
) -> bool:
    try:
        order = await _place(cmd, db, rules, clock())
    except BadRequest as exc:
        if exc.detail == "Shopping cart is empty":
            raise
        await refresh()  # a rule may have failed on a projection that lags (API.md §1.8)
        order = await _place(cmd, db, rules, clock())
    key = f"order-{order.order_id}"
    try:
        payment_id = await payments.authorize(
            idempotency_key=key,
            amount=order.total,
            currency=order.currency,
            token=cmd.payment_token,
        )
    except PaymentDeclined:
        await _fail(db, cmd.user_id, order.order_id, "payment_declined")
        raise PaymentRequired("Payment declined") from None
    except BaseException as exc:
        await _fail(db, cmd.user_id, order.order_id, "payment_unavailable")
        if isinstance(exc, PaymentUnavailable | PaymentRejected):
            raise ServiceUnavailable("Payment service unavailable") from exc
        raise
    try:
        await payments.capture(payment_id, idempotency_key=f"{key}-capture")
    except (PaymentUnavailable, PaymentRejected) as exc:
        await payments.void(payment_id, idempotency_key=f"{key}-void")
        await _fail(db, cmd.user_id, order.order_id, "payment_unavailable")
        raise ServiceUnavailable("Payment service unavailable") from exc
    try:
        await _complete(db, cmd, order, payment_id, clock())
    except BadRequest:
        # The cart changed under the payment (event cancelled, type deleted): give it back.
        await payments.refund(payment_id, order.total, idempotency_key=f"{key}-refund")
        await _fail(db, cmd.user_id, order.order_id, "cart_changed")
        raise
    return True


def _cart_lines(user_id: int) -> Any:
    return (
        select(cart_items.c.cart_item_id, cart_items.c.quantity, *OFFER_COLUMNS)
        .join(ticket_types, ticket_types.c.type_id == cart_items.c.type_id)
        .join(events, events.c.event_id == ticket_types.c.event_id)
        .where(cart_items.c.user_id == user_id)
        .order_by(cart_items.c.cart_item_id)
    )


async def _place(cmd: Checkout, db: Database, rules: CartRules, now: datetime) -> PlacedOrder:
    async with db.unit_of_work() as uow:
        flagged = await uow.execute(
            update(carts)
            .where(
                carts.c.user_id == cmd.user_id,
                carts.c.checkout_started_at.is_(None)
                | (carts.c.checkout_started_at < now - holds.CHECKOUT_STALE),
            )
            .values(checkout_started_at=now)
            .returning(carts.c.user_id)
        )
        if flagged.first() is None:
            exists = await uow.execute(
                select(carts.c.user_id).where(carts.c.user_id == cmd.user_id)
            )
            if exists.first() is not None:
                raise Conflict("Checkout already in progress")
            raise BadRequest("Shopping cart is empty")
        lines = (await uow.execute(_cart_lines(cmd.user_id).with_for_update(of=cart_items))).all()
        if not lines:
            raise BadRequest("Shopping cart is empty")
        for line in lines:
            offer = offer_from(line)
            check_on_sale(offer, now)
            if offer.sold + offer.held > offer.max_count:  # capacity lowered under the hold
                raise not_enough(offer, offer.max_count - offer.sold - (offer.held - line.quantity))
            count = await tickets_of_customer(uow, cmd.user_id, offer.event_id)
            if count > rules.max_per_event:
                raise over_limit(rules.max_per_event)
        order = await _record_order(
            uow, cmd.user_id, [(offer_from(ln), ln.quantity) for ln in lines]
        )
        await uow.commit()
        return order


async def _record_order(
    uow: UnitOfWork, user_id: int, lines: list[tuple[Offer, int]]
) -> PlacedOrder:
    currency = lines[0][0].currency
    total = sum((offer.price * quantity for offer, quantity in lines), Decimal("0.00"))
    order_id = (
        await uow.execute(
            orders.insert()
            .values(user_id=user_id, status="pending", currency=currency, total_amount=total)
            .returning(orders.c.order_id)
        )
    ).scalar_one()
    await uow.execute(
        order_items.insert(),
        [
            {
                "order_id": order_id,
                "position": position,
                "ticket_type_id": offer.type_id,
                "event_id": offer.event_id,
                "event_name": offer.event_name,
                "ticket_type_description": offer.description,
                "quantity": quantity,
                "unit_price": offer.price,
            }
            for position, (offer, quantity) in enumerate(lines)
        ],
    )
    uow.emit(
        OrderPlaced(
            order_id=order_id,
            user_id=user_id,
            lines=[
                OrderLine(
                    ticket_type_id=o.type_id,
                    event_id=o.event_id,
                    quantity=q,
                    unit_price=str(o.price),
                )
                for o, q in lines
            ],
            total=str(total),
            currency=currency,
        ),
        aggregate_id=order_id,
    )
    return PlacedOrder(order_id=order_id, total=total, currency=currency)


async def _fail(db: Database, user_id: int, order_id: int, reason: str) -> None:
    async with db.unit_of_work() as uow:
        await uow.execute(
            update(orders).where(orders.c.order_id == order_id).values(status="failed")
        )
        await uow.execute(
            update(carts).where(carts.c.user_id == user_id).values(checkout_started_at=None)
        )
        uow.emit(
            OrderFailed(order_id=order_id, user_id=user_id, reason=reason), aggregate_id=order_id
        )
        await uow.commit()


async def _complete(
    db: Database, cmd: Checkout, order: PlacedOrder, payment_id: str, now: datetime
) -> None:
    user_id = cmd.user_id
    async with db.unit_of_work() as uow:
        items = (
            await uow.execute(
                select(order_items)
                .where(order_items.c.order_id == order.order_id)
                .order_by(order_items.c.ticket_type_id)
            )
        ).all()
        # Shared locks on the events: a cancellation waits for this sale, or this sale sees it.
        await uow.execute(
            select(events.c.event_id)
            .where(events.c.event_id.in_({i.event_id for i in items}))
            .order_by(events.c.event_id)
            .with_for_update(read=True)
        )
        issued: list[Any] = []
        sales: list[tuple[Any, Offer]] = []
        for item in items:
            tickets_of_line, offer = await _issue_line(uow, user_id, order.order_id, item, now)
            issued += tickets_of_line
            sales.append((item, offer))
        await uow.execute(
            update(orders)
            .where(orders.c.order_id == order.order_id)
            .values(status="completed", payment_id=payment_id)
        )
        await uow.execute(
            update(carts).where(carts.c.user_id == user_id).values(checkout_started_at=None)
        )
        ticket_ids = [t.ticket_id for t in issued]
        uow.emit(
            OrderCompleted(order_id=order.order_id, user_id=user_id, ticket_ids=ticket_ids),
            aggregate_id=order.order_id,
        )
        for t in issued:
            uow.emit(
                TicketPurchased(
                    ticket_id=t.ticket_id,
                    order_id=order.order_id,
                    type_id=t.type_id,
                    event_id=t.event_id,
                    owner_id=user_id,
                    price=str(t.original_price),
                    currency=t.currency,
                ),
                aggregate_id=t.ticket_id,
            )
        await _confirmation_mail(uow, cmd, order, items, ticket_ids)
        await uow.write_events()
        # The inventory rows are what every buyer of these types waits for: they are locked
        # last (in type order, as items are sorted), so only the COMMIT runs under the locks.
        for item, offer in sales:
            await _sell(uow, item, offer)
        await uow.commit()


async def _sell(uow: UnitOfWork, item: Any, offer: Offer) -> None:
    """The line's held tickets become sold, unless the capacity was lowered meanwhile below
    what is already sold plus this line (then the whole completion rolls back)."""
    tt = ticket_types.c
    sold = await uow.execute(
        update(ticket_types)
        .where(tt.type_id == item.ticket_type_id, tt.sold + item.quantity <= tt.max_count)
        .values(held=tt.held - item.quantity, sold=tt.sold + item.quantity)
        .returning(tt.type_id)
    )
    if sold.first() is None:
        raise not_enough(offer, offer.max_count - offer.sold)


async def _issue_line(
    uow: UnitOfWork, user_id: int, order_id: int, item: Any, now: datetime
) -> tuple[list[Any], Offer]:
    """Issue one order line's tickets from its hold, or refuse if the cart changed meanwhile;
    the hold becomes a sale in `_sell`."""
    row = (
        await uow.execute(
            _cart_lines(user_id)
            .where(cart_items.c.type_id == item.ticket_type_id)
            .with_for_update(of=cart_items)
        )
    ).first()
    if row is None:
        tt = (
            await uow.execute(
                select(ticket_types).where(ticket_types.c.type_id == item.ticket_type_id)
            )
        ).one()
        ev_name = item.event_name
        raise BadRequest(
            f"Not enough tickets available for '{ev_name} - {tt.description or 'selected type'}'."
            f" Only {max(0, tt.max_count - tt.sold - tt.held)} left."
        )
    offer = offer_from(row)
    check_on_sale(offer, now)
    if row.quantity < item.quantity:
        raise not_enough(offer, offer.max_count - offer.sold - offer.held + row.quantity)
    remaining = row.quantity - item.quantity
    if remaining:
        await uow.execute(
            update(cart_items)
            .where(cart_items.c.cart_item_id == row.cart_item_id)
            .values(quantity=remaining)
        )
    else:
        await uow.execute(delete(cart_items).where(cart_items.c.cart_item_id == row.cart_item_id))
    uow.emit(
        HoldReleased(
            hold_id=row.cart_item_id,
            user_id=user_id,
            type_id=item.ticket_type_id,
            quantity=item.quantity,
            expires_at=now,
        ),
        aggregate_id=row.cart_item_id,
    )
    issued = (
        await uow.execute(
            tickets.insert()
            .values(
                [
                    {
                        "order_id": order_id,
                        "type_id": item.ticket_type_id,
                        "event_id": item.event_id,
                        "owner_id": user_id,
                        "original_price": item.unit_price,
                        "currency": offer.currency,
                        "code": new_ticket_code(),
                    }
                    for _ in range(item.quantity)
                ]
            )
            .returning(
                tickets.c.ticket_id,
                tickets.c.type_id,
                tickets.c.event_id,
                tickets.c.original_price,
                tickets.c.currency,
            )
        )
    ).all()
    return list(issued), offer


async def _confirmation_mail(
    uow: UnitOfWork, cmd: Checkout, order: PlacedOrder, items: list[Any], ticket_ids: list[int]
) -> None:
    user = (await uow.execute(select(users).where(users.c.user_id == cmd.user_id))).first()
    email = user.email if user else cmd.email
    first_name = user.first_name if user else cmd.first_name
    if not email:
        log.warning(
            "no email known for user %s; order %s not confirmed", cmd.user_id, order.order_id
        )
        return
    lines = "\n".join(
        f"  {i.quantity} x {i.event_name} - {i.ticket_type_description or 'Ticket'}"
        f" at {i.unit_price} {order.currency}"
        for i in items
    )
    await queue_mail(
        uow,
        email,
        f"Your Resellio order #{order.order_id}",
        f"Hello {first_name},\n\nthank you for your order #{order.order_id}.\n\n{lines}\n\n"
        f"Total: {order.total} {order.currency}\n"
        f"Tickets: {', '.join(f'#{t}' for t in ticket_ids)}\n\n"
        "Download each ticket (with its QR code) from your account.\n",
    )
