"""Abuse (issue 9): credential stuffing against login, registration bursts, a customer
hoarding inventory with holds, one seller listing many tickets at once.

The rate-limit tests run in a System of their own with the default limits (API.md §1.7) and
loopback NOT exempt; loopback is a trusted proxy, so each client speaks for the address it
names in X-Forwarded-For. The hoarding and bulk-listing tests use the shared system.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support.actors import (
    PASSWORD,
    active_customer,
    admin_token,
    login,
    new_account_fields,
    unique,
    verified_organizer,
)
from tests.support.shop import add, available, buy, event_on_sale, ticket_type
from tests.support.system import System

TOO_MANY = {"detail": "Too many requests. Try again later."}
_addresses = (f"203.0.113.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def guarded() -> Iterator[System]:
    system = System(
        extra_env={"RATE_LIMIT_EXEMPT_NETWORKS": "10.77.0.0/16", "TRUSTED_PROXIES": "127.0.0.1/32"}
    )
    try:
        system.start()
        yield system
    finally:
        system.stop()


def client_at(system: System, address: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=system.gateway_url,
        timeout=60,
        headers={"X-Forwarded-For": address or next(_addresses)},
    )


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counted: dict[int, int] = {}
    for r in responses:
        counted[r.status_code] = counted.get(r.status_code, 0) + 1
    return counted


# ---- credential stuffing --------------------------------------------------------------------


async def test_a_burst_of_logins_for_many_emails_from_one_address(guarded: System) -> None:
    """Default 20 logins per minute per address: of 30 at once, exactly 20 are answered."""
    async with client_at(guarded) as attacker:
        burst = await asyncio.gather(
            *(login(attacker, f"{unique()}@example.com", "Guess123!") for _ in range(30))
        )
        assert statuses(burst) == {401: 20, 429: 10}
        for r in burst:
            if r.status_code == 429:
                assert r.json() == TOO_MANY
                assert 1 <= int(r.headers["retry-after"]) <= 60
        # The same address, even with a right password now: still limited.
        assert (await login(attacker, "admin@resellio.com", "x")).status_code == 429
    async with client_at(guarded) as bystander:  # other addresses are not affected
        assert (await login(bystander, f"{unique()}@example.com", "Guess123!")).status_code == 401


async def test_many_addresses_guessing_one_account(guarded: System) -> None:
    """Default 5 failed logins per account per 15 minutes, whatever the address: then even
    the right password is refused, and other accounts are not."""
    async with client_at(guarded) as setup:
        victim = await active_customer(setup, await admin_token(setup))
    for n in range(5):
        async with client_at(guarded) as attacker:
            email = victim.email.upper() if n % 2 else victim.email
            response = await login(attacker, email, f"Guess{n}123!")
            assert response.status_code == 401, response.text
    async with client_at(guarded) as somewhere:
        locked = await login(somewhere, victim.email, PASSWORD)
        assert locked.status_code == 429 and locked.json() == TOO_MANY
        assert 1 <= int(locked.headers["retry-after"]) <= 900
        other = await login(somewhere, f"{unique()}@example.com", "Guess123!")
        assert other.status_code == 401


async def test_a_burst_of_registrations_from_one_address(guarded: System) -> None:
    """Default 10 registrations per hour per address: of 15 at once, exactly 10 get in."""
    async with client_at(guarded) as farm:
        burst = await asyncio.gather(
            *(
                farm.post("/api/auth/register/customer", json=new_account_fields())
                for _ in range(15)
            )
        )
    assert statuses(burst) == {201: 10, 429: 5}


async def test_without_forwarding_loopback_is_one_client_and_limited(guarded: System) -> None:
    """Loopback is not exempt here: a client on it without X-Forwarded-For is one address."""
    async with httpx.AsyncClient(base_url=guarded.gateway_url, timeout=60) as local:
        burst = await asyncio.gather(
            *(login(local, f"{unique()}@example.com", "Guess123!") for _ in range(21))
        )
    assert statuses(burst) == {401: 20, 429: 1}


# ---- hoarding inventory with holds ---------------------------------------------------------

LIMIT_MESSAGE = "You can hold or buy at most 20 tickets for this event"


async def test_holds_across_ticket_types_stop_at_the_per_event_limit(
    api: httpx.AsyncClient,
) -> None:
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=100)
    vip = (await ticket_type(api, organizer, event.event_id, max_count=100))["type_id"]
    box = (await ticket_type(api, organizer, event.event_id, max_count=100))["type_id"]
    hoarder = await active_customer(api, admin)

    assert (await add(api, hoarder, event.type_id, 8)).status_code == 200
    assert (await add(api, hoarder, vip, 8)).status_code == 200
    refused = await add(api, hoarder, box, 5)  # 21
    assert (refused.status_code, refused.json()) == (400, {"detail": LIMIT_MESSAGE})
    assert await available(api, event.event_id, box) == 100  # nothing held by the refusal
    assert (await add(api, hoarder, box, 4)).status_code == 200  # exactly 20
    for type_id in (event.type_id, vip, box):
        refused = await add(api, hoarder, type_id, 1)
        assert (refused.status_code, refused.json()) == (400, {"detail": LIMIT_MESSAGE})

    # Bought tickets count too: after checkout the limit still holds.
    assert (await api.post("/api/cart/checkout", headers=hoarder.headers)).status_code == 200
    refused = await add(api, hoarder, vip, 1)
    assert (refused.status_code, refused.json()) == (400, {"detail": LIMIT_MESSAGE})
    # Others are not held back by one customer's limit.
    other = await active_customer(api, admin)
    assert (await add(api, other, vip, 20)).status_code == 200


async def test_concurrent_holds_cannot_beat_the_limit(api: httpx.AsyncClient) -> None:
    """Ten adds of 3 at once, over three types: exactly six fit under 20, none beyond."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=100)
    types = [event.type_id]
    for _ in range(2):
        types.append((await ticket_type(api, organizer, event.event_id, max_count=100))["type_id"])
    hoarder = await active_customer(api, admin)
    burst = await asyncio.gather(*(add(api, hoarder, types[i % 3], 3) for i in range(10)))
    assert statuses(burst) == {200: 6, 400: 4}, [r.text for r in burst]
    assert all(r.json() == {"detail": LIMIT_MESSAGE} for r in burst if r.status_code == 400)
    cart = (await api.get("/api/cart/items", headers=hoarder.headers)).json()
    assert sum(line["quantity"] for line in cart) == 18
    left = [await available(api, event.event_id, t) for t in types]
    assert sum(100 - n for n in left if n is not None) == 18


# ---- bulk listing ----------------------------------------------------------------------------


async def test_one_seller_lists_many_tickets_at_once(api: httpx.AsyncClient) -> None:
    """API.md sets no rate limit on listing: twenty listings at once all work, each once."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, tickets=50, price=30)
    seller = await active_customer(api, admin)
    tickets = [t["ticket_id"] for t in await buy(api, seller, event.type_id, 20)]
    assert len(tickets) == 20

    async def list_all(price: int) -> list[httpx.Response]:
        return await asyncio.gather(
            *(
                api.post(f"/api/tickets/{t}/resell", json={"price": price}, headers=seller.headers)
                for t in tickets
            )
        )

    assert statuses(await list_all(45)) == {200: 20}
    assert statuses(await list_all(40)) == {200: 20}  # repriced, not listed twice
    mine = await api.get("/api/resale/my-listings", params={"limit": 100}, headers=seller.headers)
    assert mine.headers["x-total-count"] == "20"
    assert sorted(r["ticket_id"] for r in mine.json()) == sorted(tickets)
    assert {r["resell_price"] for r in mine.json()} == {40.0}
    market = await api.get("/api/resale/marketplace", params={"event_id": event.event_id})
    assert market.headers["x-total-count"] == "20"
    own = await api.get("/api/tickets", params={"is_on_resale": "true"}, headers=seller.headers)
    assert {t["ticket_id"] for t in own.json()} == set(tickets)
