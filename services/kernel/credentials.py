"""How a login form and an email address are read, by auth and by the gateway alike.

The gateway counts an account's attempts (API.md §1.7) before auth sees the request. If the
two read the request differently, a client can aim the count at one account and the attempt at
another: a decoy `username` repeated after the real one, or a spelling of the address that auth
takes for the same account (`victim@example。com`). So both read it through these functions.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from email_validator import EmailNotValidError, validate_email

FORM = "application/x-www-form-urlencoded"


def form_fields(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body's fields, the first value of a repeated one.
    Bytes that are not UTF-8 are replaced, not refused: such a username names nobody."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def normalized_email(value: str) -> str:
    """The address as auth stores it: syntax and domain checked (no DNS), the domain in its
    normalised form (IDNA, lower case). Raises EmailNotValidError."""
    return validate_email(value, check_deliverability=False).normalized


def stored_address(value: str) -> str | None:
    """The address as auth stores it, or None: auth stores no such address (it refuses it at
    registration), so it names no account."""
    try:
        return normalized_email(value.strip())
    except EmailNotValidError:
        return None


def account_spelling(value: str) -> str:
    """The address as auth looks it up at login: normalised as it is stored (a spelling it
    refuses, or one naming nobody, as written)."""
    return stored_address(value) or value.strip()


def account_key(value: str) -> str:
    """What the gateway counts an account's attempts by: the address normalised as auth does,
    case folded. Auth finds an account by PostgreSQL's `lower()`, so every two spellings that
    it lowers alike must fold alike (folding may join more, which only counts stricter, as
    long as what clears the count is the spelling itself, `account_spelling`): it maps "İ"
    to a plain "i", where Python's folding adds a combining dot
    (tests/integration/test_account_keys.py checks the rest against the database)."""
    return fold(account_spelling(value))


def fold(spelling: str) -> str:
    return spelling.replace("\u0130", "i").casefold()
