"""The marketplace (API.md §10.1), my listings (§10.2) and the event page's resale part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.actors import Account, active_customer, admin_token, unique
from tests.support.resale_actors import holder_of, marketplace, organizer_event, resell
from tests.support.shop import OnSale, buy, ticket_type

LISTING = {
    "ticket_id",
    "original_price",
    "resell_price",
    "event_name",
    "event_date",
    "venue_name",
    "ticket_type_description",
    "seat",
    "event_id",
}


@pytest.fixture(scope="module")
async def market(api: httpx.AsyncClient) -> dict[str, Any]:
    """One event with four listings by three sellers: 60, 60, 75 (standard, original 50) and
    25 (a VIP_% type, original 20)."""
    admin = await admin_token(api)
    event = await organizer_event(api, admin, start=datetime.now(UTC) + timedelta(days=40))
    a = await holder_of(api, admin, event, quantity=2)
    b = await holder_of(api, admin, event)
    vip = await ticket_type(
        api, event.organizer, event.event_id, price=20, description="VIP_% Lounge"
    )
    c = await active_customer(api, admin)
    c_ticket = (await buy(api, c, vip["type_id"]))[0]["ticket_id"]
    a_tickets = [t["ticket_id"] for t in await _tickets(api, a.account)]
    prices = [
        (a.account, a_tickets[0], 60),
        (a.account, a_tickets[1], 75),
        (b.account, b.ticket_id, 60),
        (c, c_ticket, 25),
    ]
    for who, tid, price in prices:
        response = await resell(api, who, tid, price)
        assert response.status_code == 200, response.text
    return {"event": event, "a": a.account, "b": b.account, "c": c, "prices": prices}


async def _tickets(api: httpx.AsyncClient, who: Account) -> list[dict[str, Any]]:
    return (await api.get("/api/tickets", headers=who.headers)).json()  # type: ignore[no-any-return]


async def ids(
    api: httpx.AsyncClient, who: Account | None = None, *, total: int | None = None, **params: Any
) -> list[int]:
    """The listed ticket ids; X-Total-Count must be `total` (the matches before paging), or
    for an unpaged question exactly the number of listings answered."""
    response = await marketplace(api, who, **params)
    assert response.status_code == 200, response.text
    found = [x["ticket_id"] for x in response.json()]
    assert response.headers["X-Total-Count"] == str(len(found) if total is None else total)
    return found


async def named_event(api: httpx.AsyncClient, admin: str, name: str, start: datetime) -> OnSale:
    """An approved event on sale starting at `start`, renamed `name` by its organizer."""
    event = await organizer_event(api, admin, start=start)
    response = await api.put(
        f"/api/events/{event.event_id}", json={"name": name}, headers=event.organizer.headers
    )
    assert response.status_code == 200, response.text
    event.name = name
    return event


async def test_listing_shape_total_and_own_listings_excluded(
    api: httpx.AsyncClient, market: dict[str, Any]
) -> None:
    eid = market["event"].event_id
    response = await marketplace(api, event_id=eid)
    assert response.headers["X-Total-Count"] == "4"
    rows = response.json()
    assert all(set(r) == LISTING for r in rows)
    first = rows[0]
    assert first["event_id"] == eid and first["event_name"] == market["event"].name
    assert first["seat"] is None and first["venue_name"].startswith("Hall ")
    mine = {tid for who, tid, _ in market["prices"] if who is market["a"]}
    seen_by_a = await ids(api, market["a"], event_id=eid)
    assert len(seen_by_a) == 2 and not mine & set(seen_by_a)


async def test_sorts_with_ticket_id_tie_breaker(
    api: httpx.AsyncClient, market: dict[str, Any]
) -> None:
    eid = market["event"].event_id
    by_price = sorted(market["prices"], key=lambda p: (p[2], p[1]))
    assert await ids(api, event_id=eid, sort_by="resell_price") == [p[1] for p in by_price]
    desc = sorted(market["prices"], key=lambda p: (-p[2], p[1]))
    assert await ids(api, event_id=eid, sort_by="resell_price", sort_order="desc") == [
        p[1] for p in desc
    ]
    originals = await marketplace(api, event_id=eid, sort_by="original_price")
    assert [r["original_price"] for r in originals.json()] == [20.0, 50.0, 50.0, 50.0]
    same_day = await ids(api, event_id=eid)  # one event: all ties, ticket_id decides
    assert same_day == sorted(same_day)
    assert await ids(api, event_id=eid, sort_by="event_name") == sorted(same_day)


async def test_event_date_and_event_name_sorts_across_events_in_byte_order(
    api: httpx.AsyncClient,
) -> None:
    """Two events whose names sort against their dates ("B" < "b" in byte order), listed so
    that ticket ids follow neither order: each sort and its direction gives its own answer."""
    admin = await admin_token(api)
    tag = unique("sort")
    now = datetime.now(UTC)
    later = await named_event(api, admin, f"B {tag}", now + timedelta(days=50))
    earlier = await named_event(api, admin, f"b {tag}", now + timedelta(days=45))
    listed: list[int] = []
    for event in (later, earlier, later):
        seller = await holder_of(api, admin, event)
        response = await resell(api, seller.account, seller.ticket_id, 40)
        assert response.status_code == 200, response.text
        listed.append(seller.ticket_id)
    late_1, early, late_2 = listed
    assert late_1 < early < late_2
    assert await ids(api, search=tag) == [early, late_1, late_2]  # event_date is the default
    assert await ids(api, search=tag, sort_by="event_date", sort_order="desc") == [
        late_1,
        late_2,
        early,
    ]  # ties still by ticket_id ascending
    assert await ids(api, search=tag, sort_by="event_name") == [late_1, late_2, early]
    assert await ids(api, search=tag, sort_by="event_name", sort_order="desc") == [
        early,
        late_1,
        late_2,
    ]
    assert await ids(api, search=tag, sort_by="event_name", limit=2, page=2, total=3) == [early]


async def test_filters(api: httpx.AsyncClient, market: dict[str, Any]) -> None:
    eid = market["event"].event_id
    assert len(await ids(api, event_id=eid, min_price=60, max_price=60)) == 2
    assert len(await ids(api, event_id=eid, min_original_price=20, max_original_price=20)) == 1
    assert len(await ids(api, event_id=eid, max_original_price=19.99)) == 0
    assert len(await ids(api, event_id=eid, search="vip_% LOUNGE")) == 1  # type description
    assert len(await ids(api, event_id=eid, search="_")) == 1  # literal, not a wildcard
    assert len(await ids(api, event_id=eid, search="%")) == 1
    assert len(await ids(api, search=market["event"].name.upper())) == 4  # event name
    venue = (await marketplace(api, event_id=eid)).json()[0]["venue_name"]
    assert len(await ids(api, event_id=eid, venue=venue[2:].lower())) == 4
    assert len(await ids(api, event_id=eid, search=venue)) == 4
    day = (datetime.now(UTC) + timedelta(days=40)).date()
    assert len(await ids(api, event_id=eid, event_date_from=str(day), event_date_to=str(day))) == 4
    assert await ids(api, event_id=eid, event_date_from=str(day + timedelta(days=1))) == []
    assert await ids(api, event_id=eid, event_date_to=str(day - timedelta(days=1))) == []
    assert len(await ids(api, event_id=eid, event_date_to="9999-12-31")) == 4  # the last day
    assert await ids(api, event_id=eid, event_date_from="9999-12-31") == []
    assert len(await ids(api, event_id=eid, event_date_from="0001-01-01")) == 4
    assert await ids(api, event_id=eid, has_seat="true") == []
    assert len(await ids(api, event_id=eid, has_seat="FALSE")) == 4
    assert len(await ids(api, search=market["event"].name, event_id=0)) == 4  # 0 = ignored


async def test_paging(api: httpx.AsyncClient, market: dict[str, Any]) -> None:
    eid = market["event"].event_id
    everything = await ids(api, event_id=eid, sort_by="resell_price")
    pages = [
        await ids(api, event_id=eid, sort_by="resell_price", page=p, limit=3, total=4)
        for p in (1, 2)
    ]
    assert pages[0] + pages[1] == everything
    past = await marketplace(api, event_id=eid, page=9, limit=3)
    assert past.json() == [] and past.headers["X-Total-Count"] == "4"


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        (
            {"sort_by": "price"},
            "Invalid sort_by. Must be one of: event_date, resell_price, original_price, event_name",
        ),
        ({"sort_order": "up"}, "Invalid sort_order. Must be 'asc' or 'desc'"),
        ({"event_date_from": "2030-13-01"}, "Invalid event_date_from format. Use YYYY-MM-DD"),
        ({"event_date_to": "01.01.2030"}, "Invalid event_date_to format. Use YYYY-MM-DD"),
    ],
)
async def test_bad_choices_are_400(
    api: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await marketplace(api, **params)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"limit": 0},
        {"limit": 101},
        {"min_price": -1},
        {"max_original_price": "x"},
        {"event_id": "x"},
        {"has_seat": "maybe"},
    ],
)
async def test_bad_bounds_are_422(api: httpx.AsyncClient, params: dict[str, Any]) -> None:
    assert (await marketplace(api, **params)).status_code == 422


async def test_invalid_token_is_401_even_on_the_public_marketplace(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/resale/marketplace", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


async def test_my_listings(api: httpx.AsyncClient, market: dict[str, Any]) -> None:
    assert (await api.get("/api/resale/my-listings")).status_code == 401
    a = market["a"]
    response = await api.get(
        "/api/resale/my-listings",
        headers=a.headers,
        params={"sort_by": "resell_price", "sort_order": "desc"},
    )
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "2"
    assert [r["resell_price"] for r in response.json()] == [75.0, 60.0]
    narrowed = await api.get(
        "/api/resale/my-listings",
        headers=a.headers,
        params={"min_price": 61, "search": market["event"].name},
    )
    assert [r["resell_price"] for r in narrowed.json()] == [75.0]
    bad = await api.get("/api/resale/my-listings", headers=a.headers, params={"sort_by": "x"})
    assert bad.status_code == 400
    assert (
        await api.get("/api/resale/my-listings", headers=a.headers, params={"limit": 0})
    ).status_code == 422


async def test_event_page_resale_summary_excludes_the_callers_own(
    api: httpx.AsyncClient, market: dict[str, Any]
) -> None:
    eid = market["event"].event_id
    public = (await api.get(f"/api/events/{eid}")).json()["resale"]
    assert public == {"listing_count": 4, "lowest_price": 25.0}
    as_c = (await api.get(f"/api/events/{eid}", headers=market["c"].headers)).json()["resale"]
    assert as_c == {"listing_count": 3, "lowest_price": 60.0}
