"""The event page's resale part remembered by resale (services/kernel/answers.py): repeated
pages are not counted again, a listing put up or taken down is seen by the next page, a
caller's own listings stay out of what they are shown, and a listing whose event ends leaves
the remembered count when it ends, with no write to say so."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from services.kernel.db import create_engine
from tests.support.actors import admin_token
from tests.support.resale_actors import holder_of, organizer_event, resell, withdraw
from tests.support.shop import eventually
from tests.support.system import System, answers_of


async def resale_part(
    api: httpx.AsyncClient, event_id: int, headers: dict[str, str] | None = None
) -> Any:
    page = await api.get(f"/api/events/{event_id}", headers=headers or {})
    assert page.status_code == 200, page.text
    return page.json()["resale"]


async def test_the_resale_part_is_remembered_until_a_listing_changes(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    event = await organizer_event(api, admin, start=datetime.now(UTC) + timedelta(days=30))
    seller = await holder_of(api, admin, event)
    other = await holder_of(api, admin, event)
    assert await resale_part(api, event.event_id) == {"listing_count": 0, "lowest_price": None}
    assert (await resell(api, seller.account, seller.ticket_id, 70)).status_code == 200

    async def shows(expected: dict[str, Any], headers: dict[str, str] | None = None) -> bool:
        return await resale_part(api, event.event_id, headers) == expected

    one = {"listing_count": 1, "lowest_price": 70.0}
    single = len(system.instances("resale")) == 1
    assert await shows(one) if single else await eventually(lambda: shows(one))
    hits = await answers_of(system, "resale", "hit")
    for _ in range(6):
        assert await shows(one)
    assert await answers_of(system, "resale", "hit") - hits >= 6 - len(system.instances("resale"))
    # The seller is not shown their own listing, and nobody else is shown the seller's view.
    none = {"listing_count": 0, "lowest_price": None}
    for _ in range(2):
        assert await shows(none, seller.account.headers)
        assert await shows(one, other.account.headers)
        assert await shows(one)

    assert (await resell(api, other.account, other.ticket_id, 55)).status_code == 200
    two = {"listing_count": 2, "lowest_price": 55.0}
    assert await shows(two) if single else await eventually(lambda: shows(two))
    assert (await withdraw(api, other.account, other.ticket_id)).status_code == 200
    assert await shows(one) if single else await eventually(lambda: shows(one))
    assert await shows(none, seller.account.headers)


async def test_a_remembered_count_drops_a_listing_when_its_event_ends(
    api: httpx.AsyncClient, system: System
) -> None:
    """The listing is written with the listings' triggers off (no notification, as if nothing
    changed): only the end of its event can take it out of the remembered answer."""
    engine = create_engine(system.database_url, pool_size=1)
    event_id = 2_000_000_000 + int(datetime.now(UTC).timestamp() * 1000) % 100_000_000
    resale = f"{system.url('resale')}/internal/resale-summary"
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    "INSERT INTO resale.listings (ticket_id, seller_id, event_id, type_id, "
                    "price, currency, original_price, state, event_name, event_start, event_end) "
                    "VALUES (:e, 1, :e, 1, 40, 'USD', 50, 'active', 'Ends soon', "
                    "now() - interval '1 hour', now() + interval '1.5 seconds')"
                ),
                {"e": event_id},
            )
        async with httpx.AsyncClient(timeout=10) as client:

            async def summary() -> Any:
                response = await client.get(resale, params={"event_id": event_id})
                assert response.status_code == 200, response.text
                return response.json()

            assert await summary() == {"listing_count": 1, "lowest_price": 40.0}
            hits = await answers_of(system, "resale", "hit")
            assert await summary() == {"listing_count": 1, "lowest_price": 40.0}
            assert await answers_of(system, "resale", "hit") == hits + 1  # remembered
            await asyncio.sleep(1.7)
            assert await summary() == {"listing_count": 0, "lowest_price": None}
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM resale.listings WHERE event_id = :e"), {"e": event_id}
            )
        await engine.dispose()
