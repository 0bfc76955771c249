"""Traffic for the fault tests: streams of checkouts and resale purchases through the gateway,
recording every answer, so a test can tell what succeeded while something was broken."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.actors import Account, active_customer, admin_token, verified_organizer
from tests.support.resale_actors import purchase, resell
from tests.support.shop import OnSale, add, buy, event_on_sale


@dataclass
class Market:
    """An approved event on sale, customers to buy, and sellers with listed tickets."""

    admin: str
    event: OnSale
    buyers: list[Account]
    listed: list[tuple[Account, int]] = field(default_factory=list)  # (seller, ticket_id)


async def market(
    gw: httpx.AsyncClient, buyers: int, sellers: int = 0, listings_each: int = 1, tickets: int = 300
) -> Market:
    admin = await admin_token(gw)
    organizer = await verified_organizer(gw, admin)
    event = await event_on_sale(gw, admin, organizer, tickets=tickets, price=40.0)
    people = await asyncio.gather(*(active_customer(gw, admin) for _ in range(buyers + sellers)))
    shop = Market(admin, event, list(people[:buyers]))
    for seller in people[buyers:]:
        for ticket in (await buy(gw, seller, event.type_id, listings_each))[:listings_each]:
            response = await resell(gw, seller, ticket["ticket_id"], 55.0)
            assert response.status_code == 200, response.text
            shop.listed.append((seller, ticket["ticket_id"]))
    return shop


@dataclass
class Outcomes:
    """Every answer a stream got: status counts, and the ids of what succeeded."""

    statuses: Counter[int] = field(default_factory=Counter)
    details: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    completed: int = 0
    purchases: list[dict[str, Any]] = field(default_factory=list)
    succeeded_at: list[float] = field(default_factory=list)  # time.monotonic() of each 2xx

    def succeeded_between(self, start: float, end: float) -> int:
        return sum(start <= at <= end for at in self.succeeded_at)

    def record(self, response: httpx.Response | None, started: float) -> None:
        answered = time.monotonic()
        self.slowest_s = max(self.slowest_s, answered - started)
        status = response.status_code if response is not None else 0
        self.statuses[status] += 1
        if 200 <= status < 300:
            self.succeeded_at.append(answered)
        if response is not None and status >= 400:
            try:
                self.details[f"{status} {response.json().get('detail')}"] += 1
            except ValueError:
                self.details[f"{status} (not JSON)"] += 1


async def checkout_once(
    gw: httpx.AsyncClient, buyer: Account, type_id: int, out: Outcomes, token: str | None = None
) -> httpx.Response | None:
    """Hold one ticket and check out; the checkout's answer (None if the add failed)."""
    started = time.monotonic()
    try:
        added = await add(gw, buyer, type_id, 1)
        if added.status_code != 200:
            out.record(added, started)
            return None
        body = {"payment_token": token} if token else None
        response = await gw.post("/api/cart/checkout", json=body, headers=buyer.headers)
    except httpx.HTTPError:
        out.record(None, started)
        return None
    out.record(response, started)
    if response.status_code == 200:
        out.completed += 1
    return response


async def checkouts_until(
    gw: httpx.AsyncClient,
    buyers: list[Account],
    type_id: int,
    done: asyncio.Event,
    each: int = 15,
    pause_s: float = 0.3,
) -> Outcomes:
    """Each buyer checks out one ticket after another until `done` is set (at most `each`,
    below the per-customer limit of 20 per event)."""
    out = Outcomes()

    async def one(buyer: Account) -> None:
        for _ in range(each):
            if done.is_set():
                return
            await checkout_once(gw, buyer, type_id, out)
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(one(b) for b in buyers))
    return out


async def buy_listed(
    gw: httpx.AsyncClient, buyer: Account, ticket_id: int, out: Outcomes, **body: Any
) -> httpx.Response | None:
    started = time.monotonic()
    try:
        response = await purchase(gw, buyer, ticket_id, key=f"fault-{ticket_id}", **body)
    except httpx.HTTPError:
        out.record(None, started)
        return None
    out.record(response, started)
    if response.status_code in (200, 202):
        out.purchases.append(
            {"ticket_id": ticket_id, "buyer": buyer, "status": response.status_code}
        )
    return response
