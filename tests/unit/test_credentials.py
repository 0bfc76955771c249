"""What the gateway counts a login or a registration by is the account auth reads
(services/kernel/credentials.py, API.md §1.7)."""

from __future__ import annotations

from services.kernel.credentials import account_key, form_fields


def test_a_repeated_field_is_its_first_value_and_blanks_are_kept() -> None:
    body = b"username=a%40x.com&password=&username=decoy%40x.com&grant_type=password"
    assert form_fields(body) == {"username": "a@x.com", "password": "", "grant_type": "password"}


def test_bytes_that_are_not_utf8_are_replaced_not_refused() -> None:
    assert form_fields(b"username=\xff%40x.com&password=%FE") == {
        "username": "\ufffd@x.com",
        "password": "\ufffd",
    }


def test_spellings_of_one_account_share_a_key() -> None:
    one = {
        account_key(spelling)
        for spelling in (
            "Ann@Example.com",
            " ann@example.com ",
            "ann@example\u3002com",
            "ann@\uff45xample.com",
            "ANN@EXAMPLE.COM",
        )
    }
    assert one == {"ann@example.com"}
    # PostgreSQL's lower() (glibc, a UTF-8 ctype) maps "İ" to a plain "i", where Python's
    # folding gives "i" and a combining dot: one account, one key.
    assert account_key("v\u0130ctim@example.com") == account_key("victim@example.com")
    assert account_key("ANN\u03a3@example.com") == account_key("ann\u03c3@example.com")
    assert account_key("ann@example.com") != account_key("bob@example.com")
    assert account_key("not an address") == "not an address"
