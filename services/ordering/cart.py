"""The cart: adding a line places (or grows) a hold; removing it releases the hold at once."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

import msgspec
from sqlalchemy import select

from contracts.ordering import HoldPlaced, HoldReleased
from contracts.timeutil import utcnow
from services.kernel.db import Database, Refused, UnitOfWork
from services.kernel.errors import BadRequest, NotFound
from services.kernel.idempotency import answer_with_commit
from services.ordering import holds, views
from services.ordering.domain import (
    OFFER_SQL,
    QUANTITY_TOO_LOW,
    Offer,
    check_on_sale,
    not_enough,
    offer_from,
    over_limit,
    tickets_of_customer_sql,
)
from services.ordering.models import cart_items, carts, ticket_types

LINE_COLUMNS = [*cart_items.c, *(c for c in ticket_types.c if c.name not in ("type_id",))]


class AddToCart(msgspec.Struct, frozen=True):
    user_id: int
    type_id: int
    quantity: int


class CartRules(msgspec.Struct, frozen=True):
    hold_for: timedelta
    max_per_event: int


def lines_query() -> Any:
    return select(*LINE_COLUMNS).join(ticket_types, ticket_types.c.type_id == cart_items.c.type_id)


# What the rules need to answer an add of type $2 for customer $1 at $3: the offer, a line of
# another currency in the cart, R5's count, and whether expired holds of the type are waiting
# for the sweeper.
_RULES_OF_ADD = f"""
SELECT {OFFER_SQL},
  (SELECT o.currency FROM ordering.cart_items c
     JOIN ordering.ticket_types o ON o.type_id = c.type_id
    WHERE c.user_id = $1 AND o.currency <> t.currency LIMIT 1) AS other_currency,
  {tickets_of_customer_sql("$1", "t.event_id")} AS tickets,
  EXISTS (SELECT FROM ordering.cart_items c
          WHERE c.type_id = t.type_id AND c.hold_expires_at <= $3) AS expired_holds
FROM ordering.ticket_types t JOIN ordering.events e ON e.event_id = t.event_id
WHERE t.type_id = $2 AND NOT t.deleted
"""
# The rules' row of an add, and the line put ($4 tickets, held until $5) in the same statement
# if the type is not sold out as read: the add's rules refuse it otherwise, and its
# transaction then rolls the line back. The line's columns are NULL where it was not put.
_RULES_AND_LINE = f"""
WITH r AS MATERIALIZED ({_RULES_OF_ADD}), line AS (
  INSERT INTO ordering.cart_items (user_id, type_id, quantity, hold_expires_at)
  SELECT $1, r.type_id, $4, $5 FROM r WHERE r.sold + r.held + $4 <= r.max_count
  ON CONFLICT ON CONSTRAINT cart_items_one_line_per_type DO UPDATE
    SET quantity = cart_items.quantity + EXCLUDED.quantity,
        hold_expires_at = EXCLUDED.hold_expires_at
  RETURNING cart_item_id, user_id, quantity, hold_expires_at
)
SELECT r.*, line.* FROM r LEFT JOIN line ON true
"""
# The customer's cart, created if need be, and locked: one customer's adds run one at a time,
# so R5 cannot be passed twice concurrently.
_LOCK_CART = """
INSERT INTO ordering.carts (user_id) VALUES ($1)
ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id
"""
# Growing a line's hold restarts its timer.
_PUT_LINE = """
WITH line AS (
  INSERT INTO ordering.cart_items (user_id, type_id, quantity, hold_expires_at)
  VALUES ($1, $2, $3, $4)
  ON CONFLICT ON CONSTRAINT cart_items_one_line_per_type DO UPDATE
    SET quantity = cart_items.quantity + EXCLUDED.quantity,
        hold_expires_at = EXCLUDED.hold_expires_at
  RETURNING cart_item_id, user_id, type_id, quantity, hold_expires_at
)
SELECT line.*, t.event_id, t.description, t.max_count, t.price, t.currency, t.available_from
FROM line JOIN ordering.ticket_types t ON t.type_id = line.type_id
"""


def _check_rules(cmd: AddToCart, rules: CartRules, row: Any, now: datetime) -> Offer:
    """Errors in API.md §8.2's order: 404, R1–R3, currency, R5 (the quantity is checked first,
    R4 last)."""
    if row is None:
        raise NotFound(f"Ticket type with ID {cmd.type_id} not found")
    offer = offer_from(row)
    check_on_sale(offer, now)
    if row.other_currency is not None:
        raise BadRequest(
            f"All tickets in the cart must use the same currency ({row.other_currency})"
        )
    if row.tickets + cmd.quantity > rules.max_per_event:
        raise over_limit(rules.max_per_event)
    return offer


def _sold_out(offer: Offer, quantity: int) -> bool:
    return offer.sold + offer.held + quantity > offer.max_count


# Tickets left per type as this process last read them, and when (time.monotonic()).
_left_seen: dict[int, tuple[int, float]] = {}
# An add skips the early read while this many more than it asks for were left a moment ago.
PLENTY = 32
PLENTY_FOR_S = 1.0


def _saw(offer: Offer, taking: int = 0) -> None:
    """`offer` read just now, `taking` of what it had left about to be held."""
    if len(_left_seen) > 10_000:
        _left_seen.clear()
    _left_seen[offer.type_id] = (offer.max_count - offer.sold - offer.held - taking, monotonic())


def _plenty_left(cmd: AddToCart) -> bool:
    left, at = _left_seen.get(cmd.type_id, (0, 0.0))
    return left >= PLENTY + cmd.quantity and monotonic() - at < PLENTY_FOR_S


def _looked_short(cmd: AddToCart) -> bool:
    """Fewer than the add asks for were left a moment ago: it will most likely be refused."""
    left, at = _left_seen.get(cmd.type_id, (PLENTY, 0.0))
    return left < cmd.quantity and monotonic() - at < PLENTY_FOR_S


# Adds to a type that looked sold out a moment ago read it through this gate, a few at a
# time: in a drop's crowd they would otherwise take the CPU and the pool's connections from
# the purchases under way (the winners' checkouts), and the sell-out would come after most of
# the refusals. Each still reads the type as it is now, so one that finds tickets given back
# goes on to claim them. An add waits for its turn at most SHORT_WAIT_S, then reads anyway:
# a crowd no gate could serve in time is answered, at the price of the CPU it takes.
SHORT_READS = 2
SHORT_WAIT_S = 5.0
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(SHORT_READS)
    return gate


@asynccontextmanager
async def _turn_at_gate() -> AsyncIterator[None]:
    """A turn at the gate, or none once SHORT_WAIT_S have passed waiting for one."""
    gate = _gate()
    try:
        async with asyncio.timeout(SHORT_WAIT_S):
            await gate.acquire()  # gives a turn granted as the wait ran out to the next
    except TimeoutError:
        turn = False
    else:
        turn = True
    try:
        yield
    finally:
        if turn:
            gate.release()


async def refuse_early(cmd: AddToCart, db: Database, rules: CartRules, now: datetime) -> None:
    """Refuse an add the rules refuse right now, with one statement and no transaction: in a
    sold-out drop most adds end here, without taking the cart's lock or queueing for the
    inventory row. An add it lets through is checked again under the lock (`add_item`), so
    while plenty of the type was left a moment ago the read is skipped: it could only say
    yes. A hint that is wrong (another instance sold the rest) costs the add its
    transaction, never a wrong answer."""
    if cmd.quantity < 1:
        raise BadRequest(QUANTITY_TOO_LOW)
    if _plenty_left(cmd):
        return
    if _looked_short(cmd):
        async with _turn_at_gate():
            offer, row = await _offer_now(cmd, db, rules, utcnow())
    else:
        offer, row = await _offer_now(cmd, db, rules, now)
    _saw(offer)
    if _sold_out(offer, cmd.quantity) and not row.expired_holds:
        raise not_enough(offer, offer.max_count - offer.sold - offer.held)


async def _offer_now(
    cmd: AddToCart, db: Database, rules: CartRules, now: datetime
) -> tuple[Offer, Any]:
    """The offer as of now, read with one statement outside any transaction, after the rules
    that refuse the add whatever the inventory (404, R1–R3, currency, R5); and its row."""
    async with db.driver() as conn:
        row = await conn.fetchrow(_RULES_OF_ADD, *_args(cmd, now))
    return _check_rules(cmd, rules, row, now), row


async def add_item(cmd: AddToCart, db: Database, rules: CartRules, now: datetime) -> Any:
    """Errors in API.md §8.2's order: quantity, 404, R1–R3, currency, R5, R4."""
    if cmd.quantity < 1:
        raise BadRequest(QUANTITY_TOO_LOW)
    for _ in range(2):  # once more if others took the tickets between the read and the claim
        try:
            async with db.transaction() as uow:
                answer = views.cart_item(await _put_line(cmd, uow, rules, now))
                await answer_with_commit(uow, answer)
                # The claim locks the ticket type's inventory row, which every buyer of the
                # type needs: it goes with the COMMIT, so the lock is held only while the
                # server commits.
                await uow.commit(last=holds.hold(cmd.type_id, cmd.quantity))
                return answer
        except Refused:
            pass
    offer, _ = await _offer_now(cmd, db, rules, now)
    raise not_enough(offer, offer.max_count - offer.sold - offer.held)


async def _put_line(cmd: AddToCart, uow: UnitOfWork, rules: CartRules, now: datetime) -> Any:
    """The cart locked, the rules checked, the line put (HoldPlaced): all but the claim. The
    line goes in with the rules' read while the type is not sold out (one round trip)."""
    await uow.begin_with(_LOCK_CART, cmd.user_id)
    expires_at = now + rules.hold_for
    line = await uow.fetchrow(_RULES_AND_LINE, *_args(cmd, now), cmd.quantity, expires_at)
    offer = _check_rules(cmd, rules, line, now)
    _saw(offer, taking=0 if line.cart_item_id is None else cmd.quantity)
    if line.cart_item_id is None:
        # Sold out or fully held: refused without queueing for the inventory row every buyer
        # of the type needs (the claim re-checks under its lock whatever this read saw).
        # Expired holds the sweeper has not reached yet are back on sale right now.
        if _sold_out(offer, cmd.quantity) and not await holds.release_expired(
            uow, now, type_id=cmd.type_id
        ):
            raise not_enough(offer, offer.max_count - offer.sold - offer.held)
        line = await uow.fetchrow(_PUT_LINE, cmd.user_id, cmd.type_id, cmd.quantity, expires_at)
        assert line is not None
    uow.emit(holds.hold_event(HoldPlaced, line), aggregate_id=line.cart_item_id)
    return line


def _args(cmd: AddToCart, now: datetime) -> tuple[int, int, datetime]:
    return cmd.user_id, cmd.type_id, now


async def remove_item(user_id: int, cart_item_id: int, uow: UnitOfWork, *, shown: str) -> bool:
    """`shown`: the id as the client sent it, for the 404 (`path_id`'s 0 names nothing)."""
    cart = (await uow.execute(select(carts.c.user_id).where(carts.c.user_id == user_id))).first()
    if cart is None:
        raise NotFound("Shopping cart not found")
    removed = await holds.drop_lines(
        uow, HoldReleased, "c.cart_item_id = $1 AND c.user_id = $2", cart_item_id, user_id
    )
    if not removed:
        raise NotFound(f"Item with ID {shown} not found in your cart")
    await uow.commit()
    return True


async def list_items(user_id: int, uow: UnitOfWork) -> list[dict[str, Any]]:
    rows = await uow.execute(
        lines_query().where(cart_items.c.user_id == user_id).order_by(cart_items.c.cart_item_id)
    )
    return [views.cart_item(row) for row in rows]
