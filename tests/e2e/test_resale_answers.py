"""The event page's resale part and the marketplace's pages remembered by resale
(services/kernel/answers.py): repeated pages are not read again, a listing put up or taken
down is seen by the next page, as is a ticket type's new description, a caller's own listings
stay out of what they are shown, and a listing whose event ends leaves the remembered answer
when it ends, with no write to say so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from services.kernel.db import create_engine
from tests.support.actors import admin_token
from tests.support.resale_actors import Holder, holder_of, organizer_event, resell, withdraw
from tests.support.shop import OnSale, eventually
from tests.support.system import System, answers_of


async def resale_part(
    api: httpx.AsyncClient, event_id: int, headers: dict[str, str] | None = None
) -> Any:
    page = await api.get(f"/api/events/{event_id}", headers=headers or {})
    assert page.status_code == 200, page.text
    return page.json()["resale"]


async def two_holders(api: httpx.AsyncClient) -> tuple[OnSale, Holder, Holder]:
    """An event a month away and two customers holding a ticket of it."""
    admin = await admin_token(api)
    event = await organizer_event(api, admin, start=datetime.now(UTC) + timedelta(days=30))
    return event, await holder_of(api, admin, event), await holder_of(api, admin, event)


@contextlib.asynccontextmanager
async def listing_ending_soon(system: System) -> AsyncIterator[int]:
    """A listing at 40 (and its event, of the same id) whose event ends 1.5 s from now,
    written with the triggers off (no notification, as if nothing changed): only the end of
    its event can take it out of a remembered answer. Its event's id."""
    engine = create_engine(system.database_url, pool_size=1)
    event_id = 2_000_000_000 + int(datetime.now(UTC).timestamp() * 1000) % 100_000_000
    window = "now() - interval '1 hour', now() + interval '1.5 seconds'"
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    "INSERT INTO resale.events (event_id, organizer_id, name, start_date, "
                    "end_date, location_id, location_name, status) "
                    f"VALUES (:e, 1, 'Ends soon', {window}, 1, 'Hall', 'approved')"
                ),
                {"e": event_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO resale.listings (ticket_id, seller_id, event_id, type_id, "
                    "price, currency, original_price, state, event_name, event_start, event_end) "
                    f"VALUES (:e, 1, :e, :e, 40, 'USD', 50, 'active', 'Ends soon', {window})"
                ),
                {"e": event_id},
            )
        yield event_id
    finally:
        async with engine.begin() as conn:
            for table in ("listings", "events"):
                await conn.execute(
                    text(f"DELETE FROM resale.{table} WHERE event_id = :e"), {"e": event_id}
                )
        await engine.dispose()


async def seen(system: System, check: Callable[[], Awaitable[bool]]) -> None:
    """The check holds at once with one instance of resale; with several, once PostgreSQL's
    notification of the write has reached the instance asked."""
    if len(system.instances("resale")) == 1:
        assert await check()
    else:
        assert await eventually(check)


async def test_the_resale_part_is_remembered_until_a_listing_changes(
    api: httpx.AsyncClient, system: System
) -> None:
    event, seller, other = await two_holders(api)
    assert await resale_part(api, event.event_id) == {"listing_count": 0, "lowest_price": None}
    assert (await resell(api, seller.account, seller.ticket_id, 70)).status_code == 200

    async def shows(expected: dict[str, Any], headers: dict[str, str] | None = None) -> bool:
        return await resale_part(api, event.event_id, headers) == expected

    one = {"listing_count": 1, "lowest_price": 70.0}
    await seen(system, lambda: shows(one))
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
    await seen(system, lambda: shows(two))
    assert (await withdraw(api, other.account, other.ticket_id)).status_code == 200
    await seen(system, lambda: shows(one))
    assert await shows(none, seller.account.headers)


async def test_a_remembered_count_drops_a_listing_when_its_event_ends(
    system: System,
) -> None:
    resale = f"{system.url('resale')}/internal/resale-summary"
    async with listing_ending_soon(system) as event_id, httpx.AsyncClient(timeout=10) as client:

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


async def market(
    api: httpx.AsyncClient, event_id: int, headers: dict[str, str] | None = None
) -> tuple[list[tuple[int, float, str]], str]:
    """The marketplace's page of one event (ticket, price, type), cheapest first, and its
    X-Total-Count."""
    page = await api.get(
        "/api/resale/marketplace",
        params={"event_id": event_id, "sort_by": "resell_price"},
        headers=headers or {},
    )
    assert page.status_code == 200, page.text
    shown = [(m["ticket_id"], m["resell_price"], m["ticket_type_description"]) for m in page.json()]
    return shown, page.headers["X-Total-Count"]


async def test_marketplace_pages_are_remembered_per_caller_until_what_they_show_changes(
    api: httpx.AsyncClient, system: System
) -> None:
    event, seller, other = await two_holders(api)
    assert await market(api, event.event_id) == ([], "0")
    assert (await resell(api, seller.account, seller.ticket_id, 70)).status_code == 200

    async def shows(expected: Any, headers: dict[str, str] | None = None) -> bool:
        return await market(api, event.event_id, headers) == expected

    async def soon(expected: Any, headers: dict[str, str] | None = None) -> None:
        await seen(system, lambda: shows(expected, headers))

    types = await api.get("/api/ticket-types", params={"type_id": event.type_id})
    [described] = [t["description"] for t in types.json()]
    one = ([(seller.ticket_id, 70.0, described)], "1")
    await soon(one)
    hits = await answers_of(system, "resale", "hit")
    for _ in range(6):
        assert await shows(one)
    assert await answers_of(system, "resale", "hit") - hits >= 6 - len(system.instances("resale"))
    # The seller is not shown their own listing, and nobody else is shown the seller's view.
    for _ in range(2):
        assert await shows(([], "0"), seller.account.headers)
        assert await shows(one, other.account.headers)
        assert await shows(one)

    assert (await resell(api, other.account, other.ticket_id, 55)).status_code == 200
    two = ([(other.ticket_id, 55.0, described), (seller.ticket_id, 70.0, described)], "2")
    await soon(two)
    await soon(([(other.ticket_id, 55.0, described)], "1"), seller.account.headers)
    # What the page shows of the type comes from catalog's events: a new description shows at
    # once (resale catches up with catalog, and its ticket types' trigger tells every instance).
    edited = await api.put(
        f"/api/ticket-types/{event.type_id}",
        json={"description": "Balcony"},
        headers=event.organizer.headers,
    )
    assert edited.status_code == 200, edited.text
    await soon(([(other.ticket_id, 55.0, "Balcony"), (seller.ticket_id, 70.0, "Balcony")], "2"))

    # An operator's SQL on the venue's name: only the events table's trigger says so.
    async def venues() -> set[str]:
        params = {"event_id": event.event_id, "sort_by": "resell_price"}  # as remembered
        page = await api.get("/api/resale/marketplace", params=params)
        return {m["venue_name"] for m in page.json()}

    assert "Renamed" not in await venues()
    engine = create_engine(system.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE resale.events SET location_name = 'Renamed' WHERE event_id = :e"),
                {"e": event.event_id},
            )
    finally:
        await engine.dispose()

    async def renamed() -> bool:
        return await venues() == {"Renamed"}

    assert await eventually(renamed, timeout=3)
    assert (await withdraw(api, other.account, other.ticket_id)).status_code == 200
    await soon(([(seller.ticket_id, 70.0, "Balcony")], "1"))
    await soon(([], "0"), seller.account.headers)


async def test_a_remembered_marketplace_page_drops_a_listing_when_its_event_ends(
    api: httpx.AsyncClient, system: System
) -> None:
    async with listing_ending_soon(system) as event_id:
        assert await market(api, event_id) == ([(event_id, 40.0, None)], "1")
        hits = await answers_of(system, "resale", "hit")
        for _ in range(3):
            assert await market(api, event_id) == ([(event_id, 40.0, None)], "1")
        remembered = await answers_of(system, "resale", "hit") - hits
        assert remembered >= 3 - len(system.instances("resale"))
        await asyncio.sleep(1.7)
        assert await market(api, event_id) == ([], "0")
