"""Checkout (API.md §8.4): place the order, charge it, then issue the tickets in one transaction.

1. Place (one transaction): flag the cart as checking out (409 for a second checkout of the
   same cart, on any instance), check R1–R5 per line, record a pending order (OrderPlaced).
2. Charge through the payment provider (authorize and capture in one call), outside any
   transaction, with an idempotency key derived from the order, so the provider never charges
   an order twice.
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

from contracts.ordering import (
    HoldReleased,
    OrderCompleted,
    OrderFailed,
    OrderLine,
    OrderPlaced,
    TicketPurchased,
)
from services.kernel.db import Database, Refused, UnitOfWork
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
    OFFER_SQL,
    Offer,
    check_on_sale,
    not_enough,
    offer_from,
    over_limit,
    tickets_of_customer_sql,
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
        payment_id = await payments.charge(
            idempotency_key=key,
            amount=order.total,
            currency=order.currency,
            token=cmd.payment_token,
        )
    except PaymentDeclined:
        await _fail(db, cmd.user_id, order.order_id, "payment_declined")
        raise PaymentRequired("Payment declined") from None
    except (PaymentUnavailable, PaymentRejected) as exc:  # nothing was taken
        await _fail(db, cmd.user_id, order.order_id, "payment_unavailable")
        raise ServiceUnavailable("Payment service unavailable") from exc
    # Any other error leaves the charge's outcome unknown: the order stays pending, and crash
    # recovery settles it with the processor (recovery.py).
    try:
        await _complete(db, cmd, order, payment_id, clock())
    except BadRequest:
        # The cart changed under the payment (event cancelled, type deleted): give it back.
        await payments.refund(payment_id, order.total, idempotency_key=f"{key}-refund")
        await _fail(db, cmd.user_id, order.order_id, "cart_changed")
        raise
    return True


# The customer's ($1) cart lines, each with its offer, locked.
_LINES_WITH_OFFERS = f"""
SELECT c.cart_item_id, c.quantity, {OFFER_SQL}{{columns}}
FROM ordering.cart_items c
JOIN ordering.ticket_types t ON t.type_id = c.type_id
JOIN ordering.events e ON e.event_id = t.event_id
WHERE c.user_id = $1{{where}}
FOR UPDATE OF c
"""
# All of them, in cart order, with R5's count for their events.
_CART_LINES = _LINES_WITH_OFFERS.format(
    columns=f", {tickets_of_customer_sql('$1', 't.event_id')} AS tickets",
    where="\nORDER BY c.cart_item_id",
)
# The one of ticket type $2.
_CART_LINE = _LINES_WITH_OFFERS.format(columns="", where=" AND c.type_id = $2")
# One checkout of a cart at a time, on any instance; a flag older than CHECKOUT_STALE belongs
# to a process that died.
_FLAG_CART = """
UPDATE ordering.carts SET checkout_started_at = $2
WHERE user_id = $1 AND (checkout_started_at IS NULL OR checkout_started_at < $3)
RETURNING user_id
"""
_HAS_CART = "SELECT user_id FROM ordering.carts WHERE user_id = $1"
_RECORD_ORDER = """
WITH placed AS (
  INSERT INTO ordering.orders (user_id, status, currency, total_amount)
  VALUES ($1, 'pending', $2, $3)
  RETURNING order_id
), lines AS (
  INSERT INTO ordering.order_items (order_id, position, ticket_type_id, event_id, event_name,
                                    ticket_type_description, quantity, unit_price)
  SELECT placed.order_id, u.* FROM placed,
    unnest($4::integer[], $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::integer[],
           $10::numeric[]) AS u
)
SELECT order_id FROM placed
"""
_FAIL = """
WITH failed AS (UPDATE ordering.orders SET status = 'failed' WHERE order_id = $2)
UPDATE ordering.carts SET checkout_started_at = NULL WHERE user_id = $1
"""
# The order's lines, after shared locks on their events (a cancellation waits for this sale, or
# this sale sees it); counting the locked rows makes the statement take every lock first.
_ORDER_LINES = """
WITH locked AS (
  SELECT event_id FROM ordering.events
  WHERE event_id IN (SELECT event_id FROM ordering.order_items WHERE order_id = $1)
  ORDER BY event_id FOR SHARE
)
SELECT i.* FROM ordering.order_items i
WHERE i.order_id = $1 AND (SELECT count(*) FROM locked) >= 0
ORDER BY i.ticket_type_id
"""
# A line's tickets issued from its hold, which shrinks by that many (or goes): $1 the line,
# $2 what remains of it; the tickets' order, type, event, owner, price, currency and codes.
_ISSUE = """
WITH shrunk AS (
  UPDATE ordering.cart_items SET quantity = $2 WHERE cart_item_id = $1 AND $2 > 0
), gone AS (
  DELETE FROM ordering.cart_items WHERE cart_item_id = $1 AND $2 = 0
)
INSERT INTO ordering.tickets (order_id, type_id, event_id, owner_id, original_price, currency,
                              code)
SELECT $3, $4, $5, $6, $7, $8, u.code FROM unnest($9::text[]) AS u(code)
RETURNING ticket_id, type_id, event_id, original_price, currency
"""
# The order completed, the cart's checkout flag cleared; who gets the confirmation.
_COMPLETE = """
WITH done AS (
  UPDATE ordering.orders SET status = 'completed', payment_id = $3 WHERE order_id = $2
), unflagged AS (
  UPDATE ordering.carts SET checkout_started_at = NULL WHERE user_id = $1
)
SELECT email, first_name FROM ordering.users WHERE user_id = $1
"""


async def _place(cmd: Checkout, db: Database, rules: CartRules, now: datetime) -> PlacedOrder:
    async with db.unit_of_work() as uow:
        flagged = await uow.fetchval(_FLAG_CART, cmd.user_id, now, now - holds.CHECKOUT_STALE)
        if flagged is None:
            if await uow.fetchval(_HAS_CART, cmd.user_id) is not None:
                raise Conflict("Checkout already in progress")
            raise BadRequest("Shopping cart is empty")
        lines = await uow.fetch(_CART_LINES, cmd.user_id)
        if not lines:
            raise BadRequest("Shopping cart is empty")
        for line in lines:
            offer = offer_from(line)
            check_on_sale(offer, now)
            if offer.sold + offer.held > offer.max_count:  # capacity lowered under the hold
                raise not_enough(offer, offer.max_count - offer.sold - (offer.held - line.quantity))
            if line.tickets > rules.max_per_event:
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
    order_id = await uow.fetchval(
        _RECORD_ORDER,
        user_id,
        currency,
        total,
        list(range(len(lines))),
        [offer.type_id for offer, _ in lines],
        [offer.event_id for offer, _ in lines],
        [offer.event_name for offer, _ in lines],
        [offer.description for offer, _ in lines],
        [quantity for _, quantity in lines],
        [offer.price for offer, _ in lines],
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
        await uow.fetchval(_FAIL, user_id, order_id)
        uow.emit(
            OrderFailed(order_id=order_id, user_id=user_id, reason=reason), aggregate_id=order_id
        )
        await uow.commit()


async def _complete(
    db: Database, cmd: Checkout, order: PlacedOrder, payment_id: str, now: datetime
) -> None:
    user_id = cmd.user_id
    async with db.unit_of_work() as uow:
        items = await uow.fetch(_ORDER_LINES, order.order_id)
        issued: list[Any] = []
        sales: list[tuple[Any, Offer]] = []
        for item in items:
            tickets_of_line, offer = await _issue_line(uow, user_id, order.order_id, item, now)
            issued += tickets_of_line
            sales.append((item, offer))
        recipient = await uow.fetchrow(_COMPLETE, user_id, order.order_id, payment_id)
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
        await _confirmation_mail(uow, cmd, recipient, order, items, ticket_ids)
        # The inventory rows are what every buyer of these types waits for: they are locked
        # with the COMMIT (in type order, as items are sorted), so are held only while the
        # server commits.
        try:
            await uow.commit(last=holds.sell([(i.ticket_type_id, i.quantity) for i, _ in sales]))
        except Refused as exc:
            offer = next((o for i, o in sales if str(i.ticket_type_id) == exc.detail), sales[0][1])
            raise not_enough(offer, offer.max_count - offer.sold) from None


async def _issue_line(
    uow: UnitOfWork, user_id: int, order_id: int, item: Any, now: datetime
) -> tuple[list[Any], Offer]:
    """Issue one order line's tickets from its hold, or refuse if the cart changed meanwhile;
    the hold becomes a sale when the order completes."""
    row = await uow.fetchrow(_CART_LINE, user_id, item.ticket_type_id)
    if row is None:
        tt = await uow.fetchrow(
            "SELECT description, max_count - sold - held AS left"
            " FROM ordering.ticket_types WHERE type_id = $1",
            item.ticket_type_id,
        )
        assert tt is not None
        raise BadRequest(
            f"Not enough tickets available for '{item.event_name} - "
            f"{tt.description or 'selected type'}'. Only {max(0, tt.left)} left."
        )
    offer = offer_from(row)
    check_on_sale(offer, now)
    if row.quantity < item.quantity:
        raise not_enough(offer, offer.max_count - offer.sold - offer.held + row.quantity)
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
    issued = await uow.fetch(
        _ISSUE,
        row.cart_item_id,
        row.quantity - item.quantity,
        order_id,
        item.ticket_type_id,
        item.event_id,
        user_id,
        item.unit_price,
        offer.currency,
        [new_ticket_code() for _ in range(item.quantity)],
    )
    return list(issued), offer


async def _confirmation_mail(
    uow: UnitOfWork,
    cmd: Checkout,
    user: Any,
    order: PlacedOrder,
    items: list[Any],
    ticket_ids: list[int],
) -> None:
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
        with_commit=True,  # no secret in it: the hot path's round trip saved
    )
