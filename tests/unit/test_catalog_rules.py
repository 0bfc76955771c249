"""Pure rules of catalog's request parsing and search (no database)."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

from services.catalog.models import events
from services.catalog.schemas import EventQuery, TicketTypeCreate
from services.kernel.errors import RequestValidationError
from services.kernel.search import contains
from services.kernel.validation import parse_mapping


def test_search_terms_are_escaped_so_wildcards_match_literally() -> None:
    clause = contains(events.c.name, "50%_off\\")
    compiled = clause.compile(dialect=postgresql.dialect())
    assert "ILIKE" in str(compiled) and "ESCAPE" in str(compiled)
    assert compiled.params["name_1"] == "%50\\%\\_off\\\\%"


def test_ticket_type_currency_is_three_letters_upper_cased() -> None:
    body = {"max_count": 1, "price": "1.005", "available_from": "2030-01-01", "currency": "eur"}
    parsed = parse_mapping(body, TicketTypeCreate)
    assert parsed.currency == "EUR" and str(parsed.price) == "1.01"
    for bad in ("EU", "EURO", "E1R", "ÉUR"):
        with pytest.raises(RequestValidationError) as refused:
            parse_mapping({**body, "currency": bad}, TicketTypeCreate)
        assert refused.value.errors[0]["loc"] == ["body", "currency"]


def test_nul_characters_are_refused_as_input_not_passed_to_postgresql() -> None:
    with pytest.raises(RequestValidationError) as refused:
        parse_mapping({"search": "a\x00b", "page": "2"}, EventQuery, source="query")
    assert refused.value.errors == [
        {
            "loc": ["query", "search"],
            "msg": "Value error, NUL characters are not allowed",
            "type": "value_error",
        }
    ]


def test_a_date_with_no_utc_equivalent_is_invalid_input() -> None:
    body = {"max_count": 1, "price": 1, "available_from": "0001-01-01T00:00:00+01:00"}
    with pytest.raises(RequestValidationError) as refused:
        parse_mapping(body, TicketTypeCreate)
    assert refused.value.errors[0]["loc"] == ["body", "available_from"]
