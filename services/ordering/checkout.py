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
from services.kernel.idempotency import (
    answer_with_commit,
    claim_in,
    free_with_commit,
    running_key,
)
from services.kernel.mail import queue_mail
from services.kernel.payments import (
    MAX_CHARGE,
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
COMPLETED = True  # a completed checkout's answer (API.md §8.4)


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


class Settled(Exception):
    """The order was no longer pending: another process (crash recovery, finishing a checkout
    stalled past CHECKOUT_STALLED_AFTER_S) completed or failed it first."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


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
    except Settled as settled:
        # Recovery finished this order while this checkout stalled: with this very payment
        # (its tickets issued), or failed, its money given back.
        if settled.status == "completed":
            return COMPLETED
        raise ServiceUnavailable("Payment service unavailable") from None
    except BadRequest:
        # The cart changed under the payment (event cancelled, type deleted): give it back.
        await payments.refund(payment_id, order.total, idempotency_key=f"{key}-refund")
        await _fail(db, cmd.user_id, order.order_id, "cart_changed")
        raise
    return COMPLETED


# The customer's ($1) cart flagged as checking out (one checkout of a cart at a time, on any
# instance; a flag older than $3 belongs to a process that died), then its lines, each with its
# offer and R5's count for its event, locked, in cart order, and the order's id drawn. No row
# when the flag was not taken or the cart is empty (`_FLAGGED_AT` tells which).
_FLAG_AND_LINES = f"""
WITH drawn AS MATERIALIZED (SELECT nextval('ordering.orders_order_id_seq') AS order_id),
flagged AS (
  UPDATE ordering.carts SET checkout_started_at = $2,
    checkout_order_id = (SELECT order_id FROM drawn)
  WHERE user_id = $1 AND (checkout_started_at IS NULL OR checkout_started_at < $3)
  RETURNING user_id
)
SELECT c.cart_item_id, c.quantity, {OFFER_SQL},
  {tickets_of_customer_sql("$1", "t.event_id")} AS tickets,
  (SELECT order_id FROM drawn) AS order_id
FROM ordering.cart_items c
JOIN ordering.ticket_types t ON t.type_id = c.type_id
JOIN ordering.events e ON e.event_id = t.event_id
WHERE c.user_id = $1 AND (SELECT count(*) FROM flagged) = 1
ORDER BY c.cart_item_id
FOR UPDATE OF c
"""
_FLAGGED_AT = "SELECT checkout_started_at FROM ordering.carts WHERE user_id = $1"
# Sent with the COMMIT: the pending order and its lines.
_RECORD_ORDER = """
WITH placed AS (
  INSERT INTO ordering.orders (order_id, user_id, status, currency, total_amount, request_path,
                               request_key)
  VALUES ($1, $2, 'pending', $3, $4, $12, $13)
)
INSERT INTO ordering.order_items (order_id, position, ticket_type_id, event_id, event_name,
                                  ticket_type_description, quantity, unit_price)
SELECT $1, u.* FROM unnest($5::integer[], $6::bigint[], $7::bigint[], $8::text[], $9::text[],
                           $10::integer[], $11::numeric[]) AS u
"""
# The cart's checkout flag, if the order's ($2) checkout set it: a later checkout may have
# taken over a stale one, and its flag stays (else a third could start beside it).
_FLAG_OF_ORDER = "user_id = $1 AND (checkout_order_id = $2 OR checkout_order_id IS NULL)"
# The order failed if still pending, and then its cart's flag cleared; how many orders
# failed (0 or 1).
_FAIL = f"""
WITH failed AS (
  UPDATE ordering.orders SET status = 'failed' WHERE order_id = $2 AND status = 'pending'
  RETURNING order_id
), freed AS (
  UPDATE ordering.carts SET checkout_started_at = NULL, checkout_order_id = NULL
  WHERE {_FLAG_OF_ORDER} AND EXISTS (SELECT 1 FROM failed)
)
SELECT count(*) FROM failed
"""
# The order's ($1) lines, in type order, each with the customer's ($2) cart line of its type
# (locked; none if the cart changed), the type's offer and what is left of it, and who gets the
# confirmation. Shared locks on the order's events come first: a cancellation waits for this
# sale, or this sale sees it (a locked row is read as it is once locked, not as the statement's
# snapshot had it). Then the order itself, with its status: crash recovery may have settled it.
_ORDER_LINES = f"""
WITH e AS MATERIALIZED (
  SELECT event_id, name, status, end_date FROM ordering.events
  WHERE event_id IN (SELECT event_id FROM ordering.order_items WHERE order_id = $1)
  ORDER BY event_id FOR SHARE
), o AS MATERIALIZED (
  SELECT status FROM ordering.orders WHERE order_id = $1 AND (SELECT count(*) FROM e) >= 0
  FOR UPDATE
), held AS MATERIALIZED (
  SELECT c.cart_item_id, c.type_id, c.quantity FROM ordering.cart_items c
  WHERE c.user_id = $2 AND (SELECT count(*) FROM e) >= 0
    AND c.type_id IN (SELECT ticket_type_id FROM ordering.order_items WHERE order_id = $1)
  ORDER BY c.type_id FOR UPDATE
)
SELECT (SELECT status FROM o) AS order_status,
  i.ticket_type_id, i.event_name AS ordered_event_name, i.ticket_type_description,
  i.quantity, i.unit_price, h.cart_item_id, h.quantity AS held_quantity, {OFFER_SQL},
  t.max_count - t.sold - t.held AS left, u.email, u.first_name,
  ARRAY(SELECT nextval('ordering.tickets_ticket_id_seq') FROM generate_series(1, i.quantity))
    AS ticket_ids
FROM ordering.order_items i
JOIN ordering.ticket_types t ON t.type_id = i.ticket_type_id
JOIN e ON e.event_id = t.event_id
LEFT JOIN held h ON h.type_id = i.ticket_type_id
LEFT JOIN ordering.users u ON u.user_id = $2
WHERE i.order_id = $1
ORDER BY i.ticket_type_id
"""
# Sent with the COMMIT: the order's ($3) tickets ($5, drawn with its lines) issued to $4
# from the cart lines $1, each shrunk to what remains of it ($2) or gone; one ticket per
# element of the id, type, event, price and currency arrays. Each code is drawn by
# PostgreSQL from its strong random source (two random UUIDs, 244 random bits), so no code
# travels in the message (which PostgreSQL logs if the commit fails).
_ISSUE = """
WITH shrunk AS (
  UPDATE ordering.cart_items c SET quantity = u.rest
  FROM unnest($1::bigint[], $2::integer[]) AS u(line, rest)
  WHERE c.cart_item_id = u.line AND u.rest > 0
), gone AS (
  DELETE FROM ordering.cart_items c USING unnest($1::bigint[], $2::integer[]) AS u(line, rest)
  WHERE c.cart_item_id = u.line AND u.rest = 0
)
INSERT INTO ordering.tickets (ticket_id, order_id, type_id, event_id, owner_id, original_price,
                              currency, code)
SELECT u.ticket_id, $3, u.type_id, u.event_id, $4, u.price, u.currency,
  rtrim(translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
                         'base64'), '+/', '-_'), '=')
FROM unnest($5::bigint[], $6::bigint[], $7::bigint[], $8::numeric[], $9::text[])
  AS u(ticket_id, type_id, event_id, price, currency)
"""
_LEFT = "SELECT max_count - sold FROM ordering.ticket_types WHERE type_id = $1"
# Sent with the COMMIT: the order completed, the cart's checkout flag cleared.
_COMPLETE = f"""
WITH done AS (
  UPDATE ordering.orders SET status = 'completed', payment_id = $3 WHERE order_id = $2
)
UPDATE ordering.carts SET checkout_started_at = NULL, checkout_order_id = NULL
WHERE {_FLAG_OF_ORDER}
"""


async def _place(cmd: Checkout, db: Database, rules: CartRules, now: datetime) -> PlacedOrder:
    async with db.transaction() as uow:
        await claim_in(uow)  # a request's Idempotency-Key, claimed with the pending order
        lines = await uow.fetch(_FLAG_AND_LINES, cmd.user_id, now, now - holds.CHECKOUT_STALE)
        if not lines:
            flagged_at = await uow.fetchval(_FLAGGED_AT, cmd.user_id)
            if flagged_at is not None and flagged_at != now:
                raise Conflict("Checkout already in progress")
            raise BadRequest("Shopping cart is empty")
        for line in lines:
            offer = offer_from(line)
            check_on_sale(offer, now)
            if offer.sold + offer.held > offer.max_count:  # capacity lowered under the hold
                raise not_enough(offer, offer.max_count - offer.sold - (offer.held - line.quantity))
            if line.tickets > rules.max_per_event:
                raise over_limit(rules.max_per_event)
        order = await _record_order(
            uow, lines[0].order_id, cmd.user_id, [(offer_from(ln), ln.quantity) for ln in lines]
        )
        await uow.commit()
        return order


async def _record_order(
    uow: UnitOfWork, order_id: int, user_id: int, lines: list[tuple[Offer, int]]
) -> PlacedOrder:
    currency = lines[0][0].currency
    total = sum((offer.price * quantity for offer, quantity in lines), Decimal("0.00"))
    if total > MAX_CHARGE:  # no processor takes it in one payment: declined, nothing recorded
        raise PaymentRequired("Payment declined")  # or charged, the cart and holds kept
    await uow.at_commit(
        _RECORD_ORDER,
        order_id,
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
        *(running_key() or (None, None)),  # what crash recovery answers if this request dies
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


async def _fail(
    db: Database,
    user_id: int,
    order_id: int,
    reason: str,
    request: tuple[int, str, str, str] | None = None,
) -> None:
    """The order failed, unless it was settled already (then nothing); with `request`, the key
    of the checkout that placed it is freed if that request never answered (a retry is a new
    attempt)."""
    async with db.transaction() as uow:
        if not await uow.fetchval(_FAIL, user_id, order_id):
            return
        if request is not None:
            await free_with_commit(uow, request)
        uow.emit(
            OrderFailed(order_id=order_id, user_id=user_id, reason=reason), aggregate_id=order_id
        )
        await uow.commit()


async def _complete(
    db: Database, cmd: Checkout, order: PlacedOrder, payment_id: str, now: datetime
) -> None:
    user_id = cmd.user_id
    async with db.transaction() as uow:
        items = await uow.fetch(_ORDER_LINES, order.order_id, user_id)  # the order locked
        if items and items[0].order_status != "pending":
            raise Settled(items[0].order_status)
        for item in items:
            _check_line(item, now)
            uow.emit(
                HoldReleased(
                    hold_id=item.cart_item_id,
                    user_id=user_id,
                    type_id=item.ticket_type_id,
                    quantity=item.quantity,
                    expires_at=now,
                ),
                aggregate_id=item.cart_item_id,
            )
        issued = await _issue(uow, user_id, order.order_id, items)
        await uow.at_commit(_COMPLETE, user_id, order.order_id, payment_id)
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
        await answer_with_commit(uow, COMPLETED)
        # The inventory rows are what every buyer of these types waits for: they are locked
        # with the COMMIT (in type order, as items are sorted), so are held only while the
        # server commits.
        try:
            await uow.commit(last=holds.sell([(i.ticket_type_id, i.quantity) for i in items]))
            return
        except Refused as exc:
            refused = next((i for i in items if str(i.ticket_type_id) == exc.detail), items[0])
    raise await _sold_out(db, refused)


async def _sold_out(db: Database, item: Any) -> BadRequest:
    """R4 for a line refused at the commit, with what is left as the refusal found it (a
    limit that committed while the sale waited for the row, catalog's lower capacity, is not
    in what was read before); read once the sale's connection is back in the pool, and from
    what was read before if that fails (the charge is given back either way)."""
    offer = offer_from(item)
    left = offer.max_count - offer.sold
    try:
        async with db.driver() as conn:
            found = await conn.fetchval(_LEFT, item.ticket_type_id)
        left = left if found is None else found
    except Exception:
        log.warning("what is left of type %s not read again", item.ticket_type_id, exc_info=True)
    return not_enough(offer, left)


def _check_line(item: Any, now: datetime) -> None:
    """An order line can be sold from its hold, or the cart changed meanwhile (400). The event
    first: cancelled during the charge, its cart lines went with it, and R1 says why."""
    offer = offer_from(item)
    check_on_sale(offer, now)
    if item.cart_item_id is None:
        raise BadRequest(
            f"Not enough tickets available for '{item.ordered_event_name} - "
            f"{item.description or 'selected type'}'. Only {max(0, item.left)} left."
        )
    if item.held_quantity < item.quantity:
        raise not_enough(offer, offer.max_count - offer.sold - offer.held + item.held_quantity)


class Issued(msgspec.Struct, frozen=True):
    ticket_id: int
    type_id: int
    event_id: int
    original_price: Decimal
    currency: str


async def _issue(uow: UnitOfWork, user_id: int, order_id: int, items: list[Any]) -> list[Issued]:
    """The order's tickets, issued with the COMMIT from its lines' holds (which shrink or go)
    under the ids drawn with the lines, in ticket id order; the holds become sales when the
    order completes."""
    issued = sorted(
        (
            Issued(ticket_id, i.ticket_type_id, i.event_id, i.unit_price, i.currency)
            for i in items
            for ticket_id in i.ticket_ids
        ),
        key=lambda t: t.ticket_id,
    )
    await uow.at_commit(
        _ISSUE,
        [item.cart_item_id for item in items],
        [item.held_quantity - item.quantity for item in items],
        order_id,
        user_id,
        [t.ticket_id for t in issued],
        [t.type_id for t in issued],
        [t.event_id for t in issued],
        [t.original_price for t in issued],
        [t.currency for t in issued],
    )
    return issued


async def _confirmation_mail(
    uow: UnitOfWork,
    cmd: Checkout,
    order: PlacedOrder,
    items: list[Any],
    ticket_ids: list[int],
) -> None:
    """To the customer's address as auth's events told it, else the access token's."""
    known = items[0] if items and items[0].email else None
    email = known.email if known else cmd.email
    first_name = known.first_name if known else cmd.first_name
    if not email:
        log.warning(
            "no email known for user %s; order %s not confirmed", cmd.user_id, order.order_id
        )
        return
    lines = "\n".join(
        f"  {i.quantity} x {i.ordered_event_name} - {i.ticket_type_description or 'Ticket'}"
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
