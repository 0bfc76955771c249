"""Hostile values the fuzzer found: each is a 422 (or the domain's answer), never a 500."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.catalog.schemas import EventQuery
from services.kernel.errors import RequestValidationError
from services.kernel.validation import (
    FieldError,
    parse_json,
    parse_query,
    parse_utc_datetime,
    path_id,
    shown_id,
)
from services.resale.schemas import ListingPrice


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("-3.3544372732793314e+307", "greater_than_equal"),
        ("3.0342070021829465e+129", "less_than_equal"),
        ("-0.005", "greater_than_equal"),
        ("99999999.995", "less_than_equal"),
    ],
)
def test_money_out_of_range_at_any_magnitude_is_a_422(raw: str, kind: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_query({"min_price": raw}, EventQuery)
    assert [e["type"] for e in caught.value.errors] == [kind]


def test_money_in_range_still_rounds_half_up() -> None:
    assert parse_query({"min_price": "12.345"}, EventQuery).min_price == Decimal("12.35")
    assert parse_query({"min_price": "99999999.994"}, EventQuery).min_price == Decimal(
        "99999999.99"
    )


def test_huge_resale_prices() -> None:
    with pytest.raises(RequestValidationError):
        parse_json(b'{"price": 1e300}', ListingPrice)
    # Below zero is the domain's 400 ("must be greater than 0"), whatever the size.
    assert parse_json(b'{"price": -1e300}', ListingPrice).price == Decimal("-1e300")


def test_the_text_null_is_not_an_absent_value() -> None:
    """Only JSON null is null; `?min_price=null` or `"organizer_id": "null"` are bad input."""
    with pytest.raises(RequestValidationError) as caught:
        parse_query({"min_price": "null", "organizer_id": "null"}, EventQuery)
    assert [e["loc"] for e in caught.value.errors] == [
        ["query", "min_price"],
        ["query", "organizer_id"],
    ]
    assert parse_query({"search": "null"}, EventQuery).search == "null"
    assert parse_json(b'{"price": null}', ListingPrice).price is None


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("7", 7),
        ("0007", 7),
        ("+7", 7),
        ("2147483647", 2147483647),
        ("2147483648", 0),  # out of the id range: names nothing (404)
        ("0", 0),
        ("-7", 0),
        ("0" * 30 + "7", 7),
        ("9" * 5000, 0),  # beyond what int() takes from a string
        ("-" + "9" * 5000, 0),
    ],
)
def test_a_path_id_of_any_length_is_an_id_or_names_nothing(raw: str, value: int) -> None:
    assert path_id(raw, "event_id") == value


@pytest.mark.parametrize(
    "raw", ["", "abc", "1_0", "\u0661\u0662", "+", "-", "1.0", " 7", "+-7", "0x7"]
)
def test_a_path_id_that_is_not_an_integer_is_a_422(raw: str) -> None:
    with pytest.raises(RequestValidationError) as refused:
        path_id(raw, "event_id")
    assert refused.value.errors[0]["loc"] == ["path", "event_id"]


def test_a_path_id_is_named_as_its_number_reads() -> None:
    assert [shown_id(raw) for raw in ("7", "+007", "-0", "000", "-12")] == [
        "7",
        "7",
        "0",
        "0",
        "-12",
    ]
    assert shown_id("9" * 5000) == "9" * 5000  # beyond what int() takes from a string


@pytest.mark.parametrize(
    "raw",
    [
        "0001-01-01",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59.999999",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_the_first_and_last_instants_are_out_of_range(raw: str) -> None:
    """The driver stores them as PostgreSQL's -infinity and infinity, which read back naive:
    every later comparison with an aware time would be a 500."""
    with pytest.raises(FieldError) as caught:
        parse_utc_datetime(raw)
    assert caught.value.type == "datetime_parsing"


def test_the_instants_next_to_them_are_taken() -> None:
    assert parse_utc_datetime("0001-01-01T00:00:00.000001").year == 1
    assert parse_utc_datetime("9999-12-31T23:59:59.999998").year == 9999
