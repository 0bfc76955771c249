"""The gateway's per-account counts (API.md §1.7) are keyed by `account_key`, and auth finds an
account by PostgreSQL's `lower()` (services/auth/queries.email_is). Every two spellings that
PostgreSQL takes for one account must share a key, or a client multiplies its guesses by
spelling the address otherwise. Checked here against this database's own `lower()`, for every
letter of the scripts an address is likely to be written in."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from services.kernel.credentials import account_key

RANGES = [
    (0x41, 0x7A),  # ASCII letters
    (0xC0, 0x24F),  # Latin-1 Supplement, Latin Extended-A and -B
    (0x370, 0x3FF),  # Greek
    (0x400, 0x52F),  # Cyrillic
    (0x1E00, 0x1FFF),  # Latin Extended Additional, Greek Extended
    (0x2100, 0x214F),  # letterlike symbols (Kelvin, Ångström)
    (0xFF21, 0xFF5A),  # full-width letters
]


async def test_spellings_postgresql_takes_for_one_account_share_a_key(
    integration_db_url: str,
) -> None:
    letters = [chr(c) for start, end in RANGES for c in range(start, end + 1) if chr(c).isalpha()]
    url = make_url(integration_db_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        rows = await conn.fetch(
            "SELECT c, lower('ab' || c || 'cd@example.com') AS l FROM unnest($1::text[]) AS c",
            letters,
        )
    finally:
        await conn.close()
    accounts: dict[str, set[str]] = {}
    for row in rows:
        accounts.setdefault(row["l"], set()).add(account_key(f"ab{row['c']}cd@example.com"))
    split = {lowered: keys for lowered, keys in accounts.items() if len(keys) > 1}
    assert not split, split
    assert len(accounts) > 500  # the letters were read, and most are accounts of their own
