"""Resale's listing rules (API.md §9.4) as pure functions: the order of the 400s and the cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from services.resale.listings import price_cap, refusal

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def ticket(**overrides: Any) -> SimpleNamespace:
    fields = {
        "status": "valid",
        "event_status": "created",
        "event_end_date": NOW + timedelta(days=1),
        "original_price": Decimal("100.00"),
        "resale_price_cap_percent": None,
        **overrides,
    }
    return SimpleNamespace(**fields)


def test_price_cap_is_rounded_down_to_the_cent() -> None:
    assert price_cap(Decimal("33.33"), 150) == Decimal("49.99")  # 49.995
    assert price_cap(Decimal("100.00"), 180) == Decimal("180.00")
    assert price_cap(Decimal("0.01"), 100) == Decimal("0.01")
    assert price_cap(Decimal("100.00"), None) is None


def test_a_listable_ticket_has_no_refusal() -> None:
    assert refusal(ticket(), Decimal("150"), None, NOW) is None


@pytest.mark.parametrize(
    ("row", "price", "message"),
    [
        # Each case breaks this rule and every later one: the first broken rule answers.
        (ticket(status="used", event_status="cancelled"), None, "Resell price required"),
        (
            ticket(status="refunded", event_status="cancelled"),
            Decimal("-1"),
            "Ticket is no longer valid",
        ),
        (ticket(status="used"), Decimal("10"), "Ticket is no longer valid"),
        (
            ticket(event_status="cancelled", event_end_date=NOW - timedelta(days=1)),
            Decimal("0"),
            "Cannot resell tickets for a cancelled event",
        ),
        (
            ticket(event_end_date=NOW, resale_price_cap_percent=100),
            Decimal("0"),
            "Cannot resell tickets for an event that has ended",
        ),
        (ticket(resale_price_cap_percent=100), Decimal("0"), "Resale price must be greater than 0"),
        (ticket(), Decimal("-5"), "Resale price must be greater than 0"),
        (
            ticket(resale_price_cap_percent=150),
            Decimal("150.01"),
            "Resale price exceeds the cap of 150.00",
        ),
    ],
)
def test_refusals_come_in_the_documented_order(row: Any, price: Any, message: str) -> None:
    assert refusal(row, price, None, NOW) == message


def test_the_events_cap_wins_over_the_deployments_and_equal_is_allowed() -> None:
    assert refusal(ticket(resale_price_cap_percent=200), Decimal("200.00"), 120, NOW) is None
    assert refusal(ticket(), Decimal("120.00"), 120, NOW) is None
    assert (
        refusal(ticket(), Decimal("120.01"), 120, NOW) == "Resale price exceeds the cap of 120.00"
    )
