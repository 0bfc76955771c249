"""The cart: adding a line places (or grows) a hold; removing it releases the hold at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from contracts.ordering import HoldPlaced, HoldReleased
from services.kernel.db import UnitOfWork
from services.kernel.errors import BadRequest, NotFound
from services.ordering import holds, views
from services.ordering.domain import (
    QUANTITY_TOO_LOW,
    check_on_sale,
    find_offer,
    not_enough,
    over_limit,
    tickets_of_customer,
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


async def add_item(cmd: AddToCart, uow: UnitOfWork, rules: CartRules, now: datetime) -> Any:
    """Errors in API.md §8.2's order: quantity, 404, R1–R3, currency, R5, R4."""
    if cmd.quantity < 1:
        raise BadRequest(QUANTITY_TOO_LOW)
    offer = await find_offer(uow, cmd.type_id)
    check_on_sale(offer, now)
    await uow.execute(
        insert(carts)
        .values(user_id=cmd.user_id)
        .on_conflict_do_nothing(index_elements=[carts.c.user_id])
    )
    # One customer's adds run one at a time, so R5 cannot be passed twice concurrently.
    await uow.execute(
        select(carts.c.user_id).where(carts.c.user_id == cmd.user_id).with_for_update()
    )
    other_currency = (
        await uow.execute(
            select(ticket_types.c.currency)
            .join(cart_items, cart_items.c.type_id == ticket_types.c.type_id)
            .where(cart_items.c.user_id == cmd.user_id, ticket_types.c.currency != offer.currency)
            .limit(1)
        )
    ).scalar()
    if other_currency is not None:
        raise BadRequest(f"All tickets in the cart must use the same currency ({other_currency})")
    limit = rules.max_per_event
    if await tickets_of_customer(uow, cmd.user_id, offer.event_id) + cmd.quantity > limit:
        raise over_limit(limit)
    # Sold out or fully held: refused without queueing for the inventory row every buyer of
    # the type needs (the claim below re-checks under its lock whatever this read saw).
    if offer.sold + offer.held + cmd.quantity > offer.max_count:
        if not await holds.release_expired(uow, now, type_id=cmd.type_id):
            raise not_enough(offer, offer.max_count - offer.sold - offer.held)
    expires_at = now + rules.hold_for
    stmt = insert(cart_items).values(
        user_id=cmd.user_id, type_id=cmd.type_id, quantity=cmd.quantity, hold_expires_at=expires_at
    )
    line = (
        await uow.execute(
            stmt.on_conflict_do_update(
                constraint="cart_items_one_line_per_type",
                # Growing a hold restarts its timer.
                set_={
                    "quantity": cart_items.c.quantity + cmd.quantity,
                    "hold_expires_at": expires_at,
                },
            ).returning(*cart_items.c)
        )
    ).one()
    result = (
        await uow.execute(lines_query().where(cart_items.c.cart_item_id == line.cart_item_id))
    ).one()
    uow.emit(holds.hold_event(HoldPlaced, line), aggregate_id=line.cart_item_id)
    await uow.write_events()
    # The claim locks the ticket type's inventory row, which every buyer of the type needs:
    # it comes last, so that only the COMMIT runs while this transaction holds that lock.
    if not await holds.claim(uow, cmd.type_id, cmd.quantity):
        # Expired holds the sweeper has not reached yet are back on sale right now.
        await holds.release_expired(uow, now, type_id=cmd.type_id)
        if not await holds.claim(uow, cmd.type_id, cmd.quantity):
            raise not_enough(offer, await holds.left(uow, cmd.type_id))
    await uow.commit()
    return views.cart_item(result)


async def remove_item(user_id: int, cart_item_id: int, uow: UnitOfWork) -> bool:
    cart = (await uow.execute(select(carts.c.user_id).where(carts.c.user_id == user_id))).first()
    if cart is None:
        raise NotFound("Shopping cart not found")
    removed = await holds.drop_lines(
        uow,
        (cart_items.c.cart_item_id == cart_item_id) & (cart_items.c.user_id == user_id),
        HoldReleased,
    )
    if not removed:
        raise NotFound(f"Item with ID {cart_item_id} not found in your cart")
    await uow.commit()
    return True


async def list_items(user_id: int, uow: UnitOfWork) -> list[dict[str, Any]]:
    rows = await uow.execute(
        lines_query().where(cart_items.c.user_id == user_id).order_by(cart_items.c.cart_item_id)
    )
    return [views.cart_item(row) for row in rows]
