"""Inventory holds: claimed by one conditional statement, released on removal or expiry.

`sold + held <= max_count` is never read-then-written: a claim is a single UPDATE whose WHERE
re-checks the row under its lock, so any number of concurrent buyers and instances, and a
capacity change racing them, cannot oversell.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select, update

from contracts.ordering import HoldExpired, HoldPlaced
from services.kernel.db import Database, UnitOfWork
from services.ordering.models import cart_items, carts, ticket_types

log = logging.getLogger("resellio.ordering.holds")
# A checkout flag older than this belongs to a process that died; it no longer blocks anything.
CHECKOUT_STALE = timedelta(minutes=2)
tt = ticket_types.c


async def claim(uow: UnitOfWork, type_id: int, quantity: int) -> bool:
    """Hold `quantity` more tickets of a type if the capacity allows; False otherwise."""
    result = await uow.execute(
        update(ticket_types)
        .where(
            tt.type_id == type_id,
            tt.deleted.is_(False),
            tt.sold + tt.held + quantity <= tt.max_count,
        )
        .values(held=tt.held + quantity)
        .returning(tt.type_id)
    )
    return result.first() is not None


async def release(uow: UnitOfWork, type_id: int, quantity: int) -> None:
    await uow.execute(
        update(ticket_types).where(tt.type_id == type_id).values(held=tt.held - quantity)
    )


async def left(uow: UnitOfWork, type_id: int) -> int:
    """What others may still hold or buy (for R4's "Only <n> left")."""
    row = (
        await uow.execute(select(tt.max_count - tt.sold - tt.held).where(tt.type_id == type_id))
    ).first()
    return max(0, int(row[0])) if row else 0


async def availability(event_id: int, db: Database) -> dict[str, int]:
    """What the gateway shows per ticket type of an event: max(0, max_count - sold - held)."""
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            select(tt.type_id, tt.max_count - tt.sold - tt.held).where(
                tt.event_id == event_id, tt.deleted.is_(False)
            )
        )
    return {str(type_id): max(0, int(n)) for type_id, n in rows}


def hold_event(kind: type[HoldPlaced], line: Any) -> HoldPlaced:
    return kind(
        hold_id=line.cart_item_id,
        user_id=line.user_id,
        type_id=line.type_id,
        quantity=line.quantity,
        expires_at=line.hold_expires_at,
    )


async def drop_lines(uow: UnitOfWork, condition: Any, kind: type[HoldPlaced]) -> int:
    """Delete the cart lines matching `condition` and give their holds back to inventory."""
    lines = (await uow.execute(delete(cart_items).where(condition).returning(*cart_items.c))).all()
    for line in sorted(lines, key=lambda line: line.type_id):  # one lock order: no deadlocks
        await release(uow, line.type_id, line.quantity)
        uow.emit(hold_event(kind, line), aggregate_id=line.cart_item_id)
    return len(lines)


async def release_expired(uow: UnitOfWork, now: datetime, type_id: int | None = None) -> int:
    """Release holds past their expiry (optionally of one type). Lines another instance is
    working on are skipped, as are carts in the middle of a checkout (their payment is
    running and their holds must still be there when it completes)."""
    in_checkout = exists().where(
        carts.c.user_id == cart_items.c.user_id,
        carts.c.checkout_started_at > now - CHECKOUT_STALE,
    )
    due = select(cart_items.c.cart_item_id).where(cart_items.c.hold_expires_at <= now, ~in_checkout)
    if type_id is not None:
        due = due.where(cart_items.c.type_id == type_id)
    due = due.order_by(cart_items.c.cart_item_id).limit(200).with_for_update(skip_locked=True)
    ids = [row[0] for row in (await uow.execute(due)).all()]
    if not ids:
        return 0
    return await drop_lines(uow, cart_items.c.cart_item_id.in_(ids), HoldExpired)


async def sweep_forever(db: Database, interval_s: float, clock: Any) -> None:
    """The background sweeper; safe with several instances (SKIP LOCKED)."""
    while True:
        try:
            async with db.unit_of_work() as uow:
                released = await release_expired(uow, clock())
                await uow.commit()
            if released:
                log.info("released %d expired holds", released)
                continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hold sweeper failed")
        await asyncio.sleep(interval_s)
