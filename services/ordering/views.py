"""Response shapes of API.md §7–§9 built from rows (naive UTC times, money as numbers)."""

from __future__ import annotations

from typing import Any

from contracts.http import money
from contracts.timeutil import naive_utc


def ticket_type(row: Any) -> dict[str, Any]:
    return {
        "type_id": row.type_id,
        "event_id": row.event_id,
        "description": row.description,
        "max_count": row.max_count,
        "price": money(row.price),
        "currency": row.currency,
        "available_from": naive_utc(row.available_from),
    }


def cart_item(row: Any) -> dict[str, Any]:
    return {
        "cart_item_id": row.cart_item_id,
        "ticket_type": ticket_type(row),
        "quantity": row.quantity,
        "hold_expires_at": naive_utc(row.hold_expires_at),
    }


def order(row: Any, items: list[Any], ticket_ids: list[int]) -> dict[str, Any]:
    return {
        "order_id": row.order_id,
        "status": row.status,
        "created_at": naive_utc(row.created_at),
        "currency": row.currency,
        "total_amount": money(row.total_amount),
        "items": [
            {
                "ticket_type_id": item.ticket_type_id,
                "event_id": item.event_id,
                "event_name": item.event_name,
                "ticket_type_description": item.ticket_type_description,
                "quantity": item.quantity,
                "unit_price": money(item.unit_price),
            }
            for item in items
        ],
        "ticket_ids": ticket_ids,
    }
