"""Inventory holds: claimed by one conditional statement, released on removal or expiry.

`sold + held <= max_count` is never read-then-written: a claim is a single UPDATE whose WHERE
re-checks the row under its lock, so any number of concurrent buyers and instances, and a
capacity change racing them, cannot oversell. It runs in `ordering.hold_tickets` (and a sale
in `ordering.sell_held`), sent in one message with the COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from contracts.ordering import HoldExpired, HoldPlaced, InventoryLimit, LimitAnswer
from services.kernel.db import Database, UnitOfWork
from services.ordering.models import ticket_types

log = logging.getLogger("resellio.ordering.holds")
# A checkout flag older than this belongs to a process that died; it no longer blocks anything.
CHECKOUT_STALE = timedelta(minutes=2)
tt = ticket_types.c


def hold(type_id: int, quantity: int) -> str:
    """The claim, sent with the COMMIT (`uow.commit(last=...)`): `quantity` more tickets of a
    type held if it is on offer and the capacity allows; otherwise Refused, nothing done."""
    return f"SELECT ordering.hold_tickets({int(type_id)}, {int(quantity)})"


def sell(lines: list[tuple[int, int]]) -> str:
    """The sale of (type, quantity) lines' held tickets, sent with the COMMIT: Refused (the
    type in its detail) if a capacity was lowered below what is sold plus the line."""
    return ";\n".join(f"SELECT ordering.sell_held({int(t)}, {int(q)})" for t, q in lines)


# Catalog's limit ($3, at its revision $2) on a type ($1), set before it commits a lower
# capacity or a deletion: no more than that is sold from now on, unless more is sold already.
# A sale committing meanwhile holds the row; the WHERE is then checked again on the row as the
# sale left it, so that sale is counted. Revisions are never reused, so a limit older than what
# is here (one that arrived after catalog gave up on it) changes nothing.
_LIMIT = """
UPDATE ordering.ticket_types SET max_count = $3, revision = $2
WHERE type_id = $1 AND revision <= $2 AND sold <= $3
RETURNING sold
"""
# Read by a statement of its own, after a limit not applied: it sees every sale committed
# before.
_REFUSED = "SELECT sold, revision > $2 AS stale FROM ordering.ticket_types WHERE type_id = $1"


async def limit(uow: UnitOfWork, type_id: int, change: InventoryLimit) -> LimitAnswer | None:
    """Catalog's lower capacity, in effect before catalog commits it (API.md §7.3, §7.4): what
    is sold, and whether the limit applied (not when older than what is here: `stale`); None
    when the type is not known here yet."""
    sold = await uow.fetchval(_LIMIT, type_id, change.revision, change.max_count)
    if sold is not None:
        return LimitAnswer(applied=True, sold=sold)
    row = await uow.fetchrow(_REFUSED, type_id, change.revision)
    if row is None or (not row.stale and row.sold <= change.max_count):
        # Not here when the UPDATE ran (the type's creation was applied just after): as not
        # known yet, so the caller tries again, rather than refused "below what is sold".
        return None
    return LimitAnswer(applied=False, sold=row.sold, stale=row.stale)


_RELEASE = "UPDATE ordering.ticket_types SET held = held - $2 WHERE type_id = $1"
_DROP = """
DELETE FROM ordering.cart_items c WHERE {where}
RETURNING c.cart_item_id, c.user_id, c.type_id, c.quantity, c.hold_expires_at
"""


async def release(uow: UnitOfWork, type_id: int, quantity: int) -> None:
    await uow.fetchval(_RELEASE, type_id, quantity)


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


async def drop_lines(uow: UnitOfWork, kind: type[HoldPlaced], where: str, *args: Any) -> int:
    """Delete the cart lines `where` (SQL on `c`, the cart line, with parameters `args`) and
    give their holds back to inventory."""
    lines = await uow.fetch(_DROP.format(where=where), *args)
    for line in sorted(lines, key=lambda line: line.type_id):  # one lock order: no deadlocks
        await release(uow, line.type_id, line.quantity)
        uow.emit(hold_event(kind, line), aggregate_id=line.cart_item_id)
    return len(lines)


# Lines past their expiry ($1 now; $2 one type, or NULL for all), skipping carts in the middle
# of a checkout ($3: flags newer than this are live) and lines another instance works on.
_DUE = """
SELECT c.cart_item_id FROM ordering.cart_items c
WHERE c.hold_expires_at <= $1 AND ($2::bigint IS NULL OR c.type_id = $2)
  AND NOT EXISTS (SELECT FROM ordering.carts k
                  WHERE k.user_id = c.user_id AND k.checkout_started_at > $3)
ORDER BY c.cart_item_id LIMIT 200
FOR UPDATE OF c SKIP LOCKED
"""


async def release_expired(uow: UnitOfWork, now: datetime, type_id: int | None = None) -> int:
    """Release holds past their expiry (optionally of one type). Lines another instance is
    working on are skipped, as are carts in the middle of a checkout (their payment is
    running and their holds must still be there when it completes)."""
    ids = [row[0] for row in await uow.fetch(_DUE, now, type_id, now - CHECKOUT_STALE)]
    if not ids:
        return 0
    return await drop_lines(uow, HoldExpired, "c.cart_item_id = ANY($1::bigint[])", ids)


async def sweep_forever(db: Database, interval_s: float, clock: Any) -> None:
    """The background sweeper; safe with several instances (SKIP LOCKED)."""
    while True:
        try:
            async with db.unit_of_work() as uow:
                released = await release_expired(uow, clock())
                if released:  # a sweep that found nothing writes nothing: no commit, so
                    await uow.commit()  # this instance's remembered answers stay
            if released:
                log.info("released %d expired holds", released)
                continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hold sweeper failed")
        await asyncio.sleep(interval_s)
