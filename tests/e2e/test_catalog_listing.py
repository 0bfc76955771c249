"""GET /api/events (API.md §6.1): every filter, sort, bound and message, with paging.

Each test creates its own events under a unique tag and searches for that tag, so events made
by other tests never change the answer.
"""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
from typing import Any

import httpx
import pytest

from tests.support.actors import Account, bearer, unique, verified_organizer
from tests.support.catalog_actors import approved_event, new_event, new_location, new_ticket_type
from tests.support.catalog_fixtures import admin, organizer  # noqa: F401  (fixtures)


async def listing(api: httpx.AsyncClient, token: str = "", **params: Any) -> httpx.Response:
    return await api.get("/api/events", params=params, headers=bearer(token) if token else {})


def names(response: httpx.Response) -> list[str]:
    """The names of an unpaged answer, whose X-Total-Count must be exactly their number."""
    assert response.status_code == 200, response.text
    found = [e["name"] for e in response.json()]
    assert response.headers["x-total-count"] == str(len(found)), response.request.url
    return found


async def test_search_is_a_literal_case_insensitive_substring(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("lit")
    venue = await new_location(api, admin)
    lid = venue["location_id"]
    await approved_event(api, admin, organizer, lid, name=f"{tag} 100% fun")
    await approved_event(api, admin, organizer, lid, name=f"{tag} 100 fun")
    await approved_event(api, admin, organizer, lid, name=f"{tag} a_b")
    await approved_event(api, admin, organizer, lid, name=f"{tag} axb")
    await approved_event(api, admin, organizer, lid, name=f"{tag} back\\slash")
    await approved_event(
        api, admin, organizer, lid, name=f"{tag} other", description=f"about {tag.upper()} X"
    )
    assert names(await listing(api, search=f"{tag} 100%")) == [f"{tag} 100% fun"]
    assert names(await listing(api, search=f"{tag} a_b")) == [f"{tag} a_b"]
    assert names(await listing(api, search=f"{tag} back\\")) == [f"{tag} back\\slash"]
    everything = await listing(api, search=tag.upper(), sort_by="name")
    assert len(names(everything)) == 6 and everything.headers["x-total-count"] == "6"
    assert f"{tag} other" in names(everything)  # matched by its description


async def test_sorting_is_byte_order_with_event_id_as_tie_breaker(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("srt")
    lid = (await new_location(api, admin))["location_id"]
    start = "2032-03-01T10:00:00"
    made = [
        await approved_event(
            api,
            admin,
            organizer,
            lid,
            name=f"{tag} {suffix}",
            start_date=start,
            end_date="2032-03-02",
        )
        for suffix in ("b", "B", "a", "Z", "same", "same")
    ]
    by_name = names(await listing(api, search=tag, sort_by="name"))
    assert by_name == [f"{tag} {s}" for s in ("B", "Z", "a", "b", "same", "same")]  # "C" collation
    same = [
        e["event_id"]
        for e in (
            await listing(api, search=f"{tag} same", sort_by="name", sort_order="desc")
        ).json()
    ]
    assert same == sorted(same)  # ties always by event_id ascending
    by_creation = (
        await listing(api, search=tag, sort_by="creation_date", sort_order="desc")
    ).json()
    assert [e["event_id"] for e in by_creation] == sorted(
        (e["event_id"] for e in made), reverse=True
    )


async def test_start_date_is_the_default_sort_with_event_id_tie_breaker(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("day")
    lid = (await new_location(api, admin))["location_id"]
    # The latest made first, names against the dates: no order by event_id or name passes.
    for suffix, day in (
        ("a", "2035-03-03"),
        ("b", "2035-03-01"),
        ("c", "2035-03-02"),
        ("d", "2035-03-01"),
    ):
        await approved_event(
            api,
            admin,
            organizer,
            lid,
            name=f"{tag} {suffix}",
            start_date=day,
            end_date="2035-03-04",
        )
    assert names(await listing(api, search=tag)) == [f"{tag} {s}" for s in "bdca"]
    descending = await listing(api, search=tag, sort_by="start_date", sort_order="desc")
    assert names(descending) == [f"{tag} {s}" for s in "acbd"]  # ties: event_id ascending
    assert names(await listing(api, search=tag, sort_order="desc")) == names(descending)


async def test_paging_never_overlaps_and_counts_before_paging(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("pg")
    lid = (await new_location(api, admin))["location_id"]
    made = [
        (
            await approved_event(
                api,
                admin,
                organizer,
                lid,
                name=f"{tag} {i}",
                start_date="2033-01-01",
                end_date="2033-01-02",
            )
        )["event_id"]
        for i in range(5)
    ]
    seen: list[int] = []
    for page in (1, 2, 3):
        response = await listing(api, search=tag, limit=2, page=page)
        assert response.headers["x-total-count"] == "5"
        seen += [e["event_id"] for e in response.json()]
    assert seen == sorted(made)  # same start date: event id decides
    past_end = await listing(api, search=tag, limit=2, page=4)
    assert past_end.json() == [] and past_end.headers["x-total-count"] == "5"


async def test_filters_combine(api: httpx.AsyncClient, admin: str, organizer: Account) -> None:
    tag = unique("flt")
    hall = await new_location(api, admin, name=f"Hall {tag} 50%")
    park = await new_location(api, admin, name=f"Park {tag}")
    other = await verified_organizer(api, admin)
    # Made later-dated first (ids: dear < theirs < cheap), so no order by event_id can
    # pass for the start-date order, ascending or descending.
    dear = await approved_event(
        api,
        admin,
        organizer,
        park["location_id"],
        name=f"{tag} dear",
        standard_ticket_price=500,
        start_date="2034-02-10",
        end_date="2034-02-11",
        minimum_age=21,
        category=["Rock"],
    )
    await new_ticket_type(api, organizer, dear["event_id"], price=40)
    theirs = await approved_event(
        api,
        admin,
        other,
        park["location_id"],
        name=f"{tag} theirs",
        standard_ticket_price=100,
        start_date="2034-03-10",
        end_date="2034-03-11",
        minimum_age=18,
        category=[],
    )
    cheap = await approved_event(
        api,
        admin,
        organizer,
        hall["location_id"],
        name=f"{tag} cheap",
        standard_ticket_price=10,
        start_date="2034-01-10",
        end_date="2034-01-11",
        minimum_age=None,
        category=["Jazz", " Blues ", "blues"],  # stored trimmed, once: found as "blues"
    )
    assert cheap["categories"] == ["Jazz", "Blues"]
    assert names(await listing(api, search=tag, location=f"{tag} 50%")) == [f"{tag} cheap"]
    assert names(await listing(api, search=tag, location=f"park {tag}".upper())) == [
        f"{tag} dear",
        f"{tag} theirs",
    ]
    assert names(
        await listing(
            api, search=tag, start_date_from="2034-02-10", start_date_to="2034-03-10T00:00:00Z"
        )
    ) == [f"{tag} dear", f"{tag} theirs"]
    assert names(await listing(api, search=tag, start_date_to="2034-02-10T01:00:00+02:00")) == [
        f"{tag} cheap"
    ]
    assert names(await listing(api, search=tag, min_price=30, max_price=50)) == [f"{tag} dear"]
    assert names(await listing(api, search=tag, min_price=10, max_price=10)) == [f"{tag} cheap"]
    assert names(await listing(api, search=tag, organizer_id=other.role_id)) == [f"{tag} theirs"]
    assert len(names(await listing(api, search=tag, organizer_id=0))) == 3
    assert names(await listing(api, search=tag, minimum_age=19)) == [f"{tag} dear"]
    assert len(names(await listing(api, search=tag, minimum_age=0))) == 3
    assert names(await listing(api, search=tag, categories="rock, BLUES")) == [
        f"{tag} cheap",
        f"{tag} dear",
    ]
    assert names(await listing(api, search=tag, categories="polka")) == []
    assert len(names(await listing(api, search=tag, has_available_tickets="TRUE"))) == 3
    assert names(await listing(api, search=tag, has_available_tickets="0")) == []
    assert names(
        await listing(api, search=tag, status="created", sort_by="start_date", sort_order="desc")
    ) == [f"{tag} theirs", f"{tag} dear", f"{tag} cheap"]
    assert theirs["status"] == "created"
    assert names(await listing(api, search=tag, unknown_parameter="x")) == [
        f"{tag} cheap",
        f"{tag} dear",
        f"{tag} theirs",
    ]


async def test_status_filter_applies_within_visibility(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("vis")
    lid = (await new_location(api, admin))["location_id"]
    await new_event(api, organizer, lid, name=f"{tag} pending")
    cancelled = await approved_event(api, admin, organizer, lid, name=f"{tag} cancelled")
    assert (
        await api.delete(f"/api/events/{cancelled['event_id']}", headers=organizer.headers)
    ).status_code == 200
    assert names(await listing(api, search=tag, status="pending")) == []
    assert names(await listing(api, search=tag)) == [f"{tag} cancelled"]
    assert names(await listing(api, organizer.token, search=tag, status="pending")) == [
        f"{tag} pending"
    ]
    assert names(await listing(api, admin, search=tag, status="cancelled")) == [f"{tag} cancelled"]
    stranger = await verified_organizer(api, admin)
    assert names(await listing(api, stranger.token, search=tag, status="pending")) == []


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        (
            {"status": "open"},
            "Invalid status. Must be one of: pending, created, rejected, cancelled",
        ),
        ({"sort_by": "price"}, "Invalid sort_by. Must be one of: start_date, name, creation_date"),
        ({"sort_order": "up"}, "Invalid sort_order. Must be 'asc' or 'desc'"),
    ],
)
async def test_bad_enumerations_are_400(
    api: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await api.get("/api/events", params=params)
    assert response.status_code == 400 and response.json() == {"detail": detail}


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0}, {"page": "one"}, {"limit": 0}, {"limit": 101}, {"min_price": -1},
        {"max_price": "cheap"}, {"start_date_from": "yesterday"}, {"start_date_to": "2024-13-01"},
        {"organizer_id": "me"}, {"minimum_age": -1}, {"has_available_tickets": "maybe"},
        {"organizer_id": 2**31}, {"status": "open", "limit": 0}, {"search": "a\x00"},
        {"location": "\x00"}, {"categories": "rock,\x00"},
    ],
)  # fmt: skip
async def test_bad_bounds_are_422(api: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await api.get("/api/events", params=params)
    assert response.status_code == 422, response.text
    assert all(entry["loc"][0] == "query" for entry in response.json()["detail"])
