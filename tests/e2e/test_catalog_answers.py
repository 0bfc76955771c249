"""Public catalog answers served from memory (services/kernel/answers.py): repeated anonymous
reads are not rebuilt, and no change — an organizer's edit, an approval, an operator's SQL,
a sale applied from ordering's events — is ever hidden behind a remembered answer."""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import text

from services.kernel.db import create_engine
from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    bearer,
    unique,
    verified_organizer,
)
from tests.support.catalog_actors import approve, approved_event, new_event, new_location
from tests.support.catalog_fixtures import admin, organizer  # noqa: F401  (fixtures)
from tests.support.system import System, answers_of


async def answers(system: System, outcome: str) -> float:
    """Catalog's answers of one outcome (hit or miss), over every instance."""
    return await answers_of(system, "catalog", outcome)


async def names(api: httpx.AsyncClient, tag: str, token: str = "") -> list[str]:
    response = await api.get(
        "/api/events", params={"search": tag}, headers=bearer(token) if token else {}
    )
    assert response.status_code == 200, response.text
    return [e["name"] for e in response.json()]


def one_instance(system: System) -> bool:
    return len(system.instances("catalog")) == 1


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> bool:
    """True once `check` holds. One instance sees its own writes at once; another instance
    sees them when PostgreSQL's notification arrives (well under a millisecond here)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_repeated_anonymous_reads_are_answered_from_memory(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account
) -> None:
    tag = unique("mem")
    venue = await new_location(api, admin)
    await approved_event(api, admin, organizer, venue["location_id"], name=f"{tag} one")
    first = await names(api, tag)
    hits = await answers(system, "hit")
    for _ in range(6):
        assert await names(api, tag) == first == [f"{tag} one"]
    assert await answers(system, "hit") - hits >= 6 - len(system.instances("catalog"))


async def test_an_edit_or_an_approval_is_seen_by_the_next_read(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account
) -> None:
    tag = unique("edit")
    venue = await new_location(api, admin)
    event = await approved_event(api, admin, organizer, venue["location_id"], name=f"{tag} old")
    assert await names(api, tag) == [f"{tag} old"]
    assert await names(api, tag) == [f"{tag} old"]  # now remembered
    renamed = await api.put(
        f"/api/events/{event['event_id']}", json={"name": f"{tag} new"}, headers=organizer.headers
    )
    assert renamed.status_code == 200, renamed.text

    async def renamed_seen() -> bool:
        return await names(api, tag) == [f"{tag} new"]

    if one_instance(system):
        assert await renamed_seen()  # the instance that wrote forgot before it answered
    else:
        assert await eventually(renamed_seen)
    page = await api.get(f"/api/events/{event['event_id']}")
    assert page.json()["name"] == f"{tag} new"

    pending = await new_event(api, organizer, venue["location_id"], name=f"{tag} later")
    assert await names(api, tag) == [f"{tag} new"]
    await approve(api, admin, pending["event_id"])

    async def approval_seen() -> bool:
        return sorted(await names(api, tag)) == [f"{tag} later", f"{tag} new"]

    assert await approval_seen() if one_instance(system) else await eventually(approval_seen)


async def test_an_answer_is_shared_only_by_callers_who_see_the_same(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("who")
    venue = await new_location(api, admin)
    await approved_event(api, admin, organizer, venue["location_id"], name=f"{tag} public")
    await new_event(api, organizer, venue["location_id"], name=f"{tag} pending")
    customer = await active_customer(api, admin)
    for _ in range(2):
        assert await names(api, tag) == [f"{tag} public"]
        assert await names(api, tag, customer.token) == [f"{tag} public"]
        assert sorted(await names(api, tag, organizer.token)) == [f"{tag} pending", f"{tag} public"]
        assert sorted(await names(api, tag, admin)) == [f"{tag} pending", f"{tag} public"]
    bad = await api.get("/api/events", params={"search": tag}, headers=bearer("not-a-token"))
    assert bad.status_code == 401  # a remembered answer never skips the token check


async def test_an_operators_sql_change_is_seen_too(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account
) -> None:
    """The notification comes from triggers on the tables, not from the service's code."""
    tag = unique("sql")
    venue = await new_location(api, admin)
    event = await approved_event(api, admin, organizer, venue["location_id"], name=f"{tag} a")
    assert await names(api, tag) == [f"{tag} a"]
    engine = create_engine(system.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE catalog.events SET name = :n WHERE event_id = :id"),
                {"n": f"{tag} b", "id": event["event_id"]},
            )
    finally:
        await engine.dispose()

    async def changed() -> bool:
        return await names(api, tag) == [f"{tag} b"]

    assert await eventually(changed)


async def test_a_sale_applied_from_ordering_changes_the_public_answer(
    api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    tag = unique("sold")
    venue = await new_location(api, admin)
    event = await approved_event(
        api, admin, organizer, venue["location_id"], name=f"{tag} gig", total_tickets=1
    )
    params: dict[str, Any] = {"search": tag, "has_available_tickets": "true"}
    assert len((await api.get("/api/events", params=params)).json()) == 1
    assert len((await api.get("/api/events", params=params)).json()) == 1  # remembered
    buyer = await active_customer(api, admin)
    types = await api.get("/api/ticket-types", params={"event_id": event["event_id"]})
    type_id = types.json()[0]["type_id"]
    added = await api.post(
        "/api/cart/items", params={"ticket_type_id": type_id, "quantity": 1}, headers=buyer.headers
    )
    assert added.status_code == 200, added.text
    assert (await api.post("/api/cart/checkout", headers=buyer.headers)).status_code == 200

    async def sold_out() -> bool:
        return (await api.get("/api/events", params=params)).json() == []

    assert await eventually(sold_out, timeout=10)  # catalog applies TicketPurchased, then forgets


async def test_a_write_on_one_instance_is_seen_by_the_others_memory() -> None:
    """Two catalog instances: B remembers an answer, A changes the data, B answers afresh."""
    system = System(instances={"catalog": 2})
    await asyncio.to_thread(system.start)
    try:
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as api:
            admin_ = await admin_token(api)
            organizer_ = await verified_organizer(api, admin_)
            tag = unique("twin")
            venue = await new_location(api, admin_)
            event = await approved_event(
                api, admin_, organizer_, venue["location_id"], name=f"{tag} first"
            )
            (_, port_a), (_, port_b) = system.instances("catalog")
            a = f"http://127.0.0.1:{port_a}"
            b = f"http://127.0.0.1:{port_b}"

            async def name_on(base: str) -> str:
                page = await api.get(f"{b if base == 'b' else a}/api/events/{event['event_id']}")
                assert page.status_code == 200, page.text
                return str(page.json()["name"])

            assert await name_on("b") == f"{tag} first"
            hits = await answers(system, "hit")
            assert await name_on("b") == f"{tag} first"
            assert await answers(system, "hit") == hits + 1  # B answered from memory
            renamed = await api.put(
                f"{a}/api/events/{event['event_id']}",
                json={"name": f"{tag} second"},
                headers=organizer_.headers,
            )
            assert renamed.status_code == 200, renamed.text

            async def b_sees_it() -> bool:
                return await name_on("b") == f"{tag} second"

            assert await eventually(b_sees_it, timeout=1.0)
    finally:
        await asyncio.to_thread(system.stop)


async def test_an_answer_from_memory_before_routing_is_the_handlers_answer(
    system: System, api: httpx.AsyncClient, admin: str, organizer: Account
) -> None:
    """A request without credentials is answered from memory before routing, with the same
    body and headers as the handler's answer and its own request id; a request with a token,
    even a bad one, still goes to the handler (401 for the bad one)."""
    tag = unique("edge")
    venue = await new_location(api, admin)
    await approved_event(api, admin, organizer, venue["location_id"], name=f"{tag} one")
    catalog = system.url("catalog")
    params = {"search": tag, "limit": "5"}
    async with httpx.AsyncClient(base_url=catalog, timeout=10) as direct:
        built = await direct.get("/api/events", params=params)
        assert built.status_code == 200, built.text
        hits = await answers(system, "hit")
        remembered = await direct.get("/api/events", params=params, headers={"X-Request-ID": "r-1"})
        assert await answers(system, "hit") == hits + 1
        assert remembered.content == built.content
        assert remembered.headers["x-request-id"] == "r-1"
        for name in ("content-type", "content-length", "x-total-count"):
            assert remembered.headers[name] == built.headers[name], name
        bad = await direct.get("/api/events", params=params, headers=bearer("not-a-token"))
        assert bad.status_code == 401, bad.text
        customer = await active_customer(api, admin)
        shared = await direct.get("/api/events", params=params, headers=customer.headers)
        assert shared.status_code == 200 and shared.content == built.content
