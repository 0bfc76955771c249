"""The customer's orders (API.md §8.5, §8.6): primary sales only, each with lines and tickets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from services.kernel.db import UnitOfWork
from services.kernel.errors import NotFound
from services.ordering import views
from services.ordering.models import order_items, orders, tickets


async def _with_lines(uow: UnitOfWork, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [row.order_id for row in rows]
    items: dict[int, list[Any]] = {i: [] for i in ids}
    issued: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for item in await uow.execute(
            select(order_items)
            .where(order_items.c.order_id.in_(ids))
            .order_by(order_items.c.order_id, order_items.c.position)
        ):
            items[item.order_id].append(item)
        for t in await uow.execute(
            select(tickets.c.order_id, tickets.c.ticket_id)
            .where(tickets.c.order_id.in_(ids))
            .order_by(tickets.c.ticket_id)
        ):
            issued[t.order_id].append(t.ticket_id)
    return [views.order(row, items[row.order_id], issued[row.order_id]) for row in rows]


async def list_orders(
    user_id: int, page: int, limit: int, uow: UnitOfWork
) -> tuple[list[dict[str, Any]], int]:
    total = (
        await uow.execute(
            select(func.count()).select_from(orders).where(orders.c.user_id == user_id)
        )
    ).scalar_one()
    rows = (
        await uow.execute(
            select(orders)
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.created_at.desc(), orders.c.order_id.desc())
            .offset((page - 1) * limit)
            .limit(limit)
        )
    ).all()
    return await _with_lines(uow, list(rows)), int(total)


async def get_order(order_id: int, user_id: int, uow: UnitOfWork) -> dict[str, Any]:
    row = (
        await uow.execute(
            select(orders).where(orders.c.order_id == order_id, orders.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound("Order not found")
    return (await _with_lines(uow, [row]))[0]
