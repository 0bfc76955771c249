"""The benchmark scenarios. Each returns rows for the table and raises CorrectnessError when an
invariant breaks (oversell, double sale, lost event), whatever the speed."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from bench.dataset import Dataset, bearer, new_customer, new_event
from bench.measure import Result, get_loop, percentile, run_async


class CorrectnessError(Exception):
    pass


@dataclass
class Row:
    scenario: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _rows(name: str, r: Result, p99_target_ms: float | None = None, rps_target: float | None = None) -> list[Row]:
    return [
        Row(name, "requests/s", round(r.rps, 1), "req/s", f">= {rps_target:g}" if rps_target else "",
            r.rps >= rps_target if rps_target else None),
        Row(name, "p50", round(r.p50_ms, 2), "ms"),
        Row(name, "p99", round(r.p99_ms, 2), "ms", f"< {p99_target_ms:g}" if p99_target_ms else "",
            r.p99_ms < p99_target_ms if p99_target_ms else None),
        Row(name, "errors", r.errors, "count", "0", r.errors == 0),
    ]


def baseline(gateway: str, seconds: int) -> tuple[list[Row], Result]:
    """The gateway answering by itself (GET /health): what every ratio is measured against."""
    r = get_loop(f"{gateway}/health", 64, seconds)
    return [Row("baseline: gateway /health c=64", "requests/s", round(r.rps, 1), "req/s"),
            Row("baseline: gateway /health c=64", "p50", round(r.p50_ms, 2), "ms")], r


def browse(gateway: str, data: Dataset, seconds: int, base: Result) -> list[Row]:
    rows: list[Row] = []
    listing = f"{gateway}/api/events?search=Concert&sort_by=start_date&limit=20&page=2"
    page = f"{gateway}/api/events/{data.event_ids[0]}"
    for c in (16, 64):
        r = get_loop(listing, c, seconds)
        rows += _rows(f"browse: GET /api/events c={c}", r, 100 if c == 64 else None, 1500 if c == 64 else None)
        rows.append(Row(f"browse: GET /api/events c={c}", "ratio to baseline rps", round(r.rps / base.rps, 3), "x"))
        r = get_loop(page, c, seconds)
        rows += _rows(f"browse: GET /api/events/{{id}} (composed) c={c}", r)
    return rows


def gateway_cost(gateway: str, catalog: str, seconds: int) -> list[Row]:
    path = "/api/events?limit=20"
    through = get_loop(gateway + path, 16, seconds)
    direct = get_loop(catalog + path, 16, seconds)
    added = through.p50_ms - direct.p50_ms
    return [
        Row("gateway cost: GET /api/events c=16", "p50 through gateway", round(through.p50_ms, 2), "ms"),
        Row("gateway cost: GET /api/events c=16", "p50 direct to catalog", round(direct.p50_ms, 2), "ms"),
        Row("gateway cost: GET /api/events c=16", "added p50", round(added, 2), "ms", "< 1", added < 1),
        Row("gateway cost: GET /api/events c=16", "rps ratio gateway/direct",
            round(through.rps / direct.rps, 3) if direct.rps else 0, "x"),
    ]


async def ticket_drop(gateway: str, data: Dataset, capacity: int, engine: Any) -> list[Row]:
    """Every customer adds one ticket and checks out at once; exactly `capacity` may win."""
    event_id = await _event(gateway, data, capacity, "Drop")
    type_id = await _standard_type(gateway, event_id)
    outcomes: dict[str, int] = {}
    sold_out = 0

    async def buy(client: httpx.AsyncClient, i: int) -> bool:
        nonlocal sold_out
        token = data.customers[i % len(data.customers)]
        h = bearer(token)
        r = await client.post("/api/cart/items", params={"ticket_type_id": type_id, "quantity": 1}, headers=h)
        if r.status_code != 200:
            key = f"add {r.status_code}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if "Not enough tickets available" in r.text:
                sold_out += 1
                return True
            return False
        r = await client.post("/api/cart/checkout", headers={**h, "Idempotency-Key": uuid.uuid4().hex})
        key = f"checkout {r.status_code}"
        outcomes[key] = outcomes.get(key, 0) + 1
        return r.status_code == 200

    buyers = len(data.customers)
    result = await run_async(buy, 64, 600, gateway, max_iterations=buyers)
    async with engine.connect() as conn:
        issued = await conn.scalar(text("SELECT count(*) FROM ordering.tickets WHERE type_id = :t"), {"t": type_id})
    won = outcomes.get("checkout 200", 0)
    if issued != capacity or won != capacity:
        raise CorrectnessError(f"ticket drop: capacity {capacity}, tickets issued {issued}, checkouts won {won}; {outcomes}")
    checkouts_per_s = won / result.seconds
    return [
        Row(f"ticket drop: {buyers} buyers, {capacity} tickets", "checkouts/s", round(checkouts_per_s, 1), "/s",
            ">= 300", checkouts_per_s >= 300),
        Row(f"ticket drop: {buyers} buyers, {capacity} tickets", "p50 (add + checkout)", round(result.p50_ms, 1), "ms"),
        Row(f"ticket drop: {buyers} buyers, {capacity} tickets", "p99 (add + checkout)", round(result.p99_ms, 1), "ms"),
        Row(f"ticket drop: {buyers} buyers, {capacity} tickets", "tickets issued", issued, "count",
            f"== {capacity}", issued == capacity),
    ]


async def _event(gateway: str, data: Dataset, capacity: int, tag: str) -> int:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        r = await client.get("/api/locations")
        location_id = r.json()[0]["location_id"]
        return await new_event(client, data.admin, data.organizer, location_id,
                               f"{tag} {uuid.uuid4().hex[:6]}", capacity, 50.0)


async def _standard_type(gateway: str, event_id: int) -> int:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        r = await client.get("/api/ticket-types", params={"event_id": event_id})
        return int(r.json()[0]["type_id"])


async def resale_rush(gateway: str, data: Dataset, listings: int, buyers_per_listing: int) -> list[Row]:
    """Sellers list tickets; many buyers race for each listing; exactly one may win each."""
    event_id = await _event(gateway, data, listings, "Rush")
    type_id = await _standard_type(gateway, event_id)
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        sellers = [await new_customer(client, data.admin, f"seller{i}") for i in range(listings)]
        ticket_ids = []
        for seller in sellers:
            h = bearer(seller)
            (await client.post("/api/cart/items", params={"ticket_type_id": type_id}, headers=h)).raise_for_status()
            (await client.post("/api/cart/checkout", headers=h)).raise_for_status()
            ticket = (await client.get("/api/tickets", headers=h)).json()[0]
            (await client.post(f"/api/tickets/{ticket['ticket_id']}/resell", json={"price": 60}, headers=h)).raise_for_status()
            ticket_ids.append(ticket["ticket_id"])
    wins: dict[int, int] = {t: 0 for t in ticket_ids}

    async def attempt(client: httpx.AsyncClient, i: int) -> bool:
        ticket_id = ticket_ids[i % listings]
        buyer = data.customers[i % len(data.customers)]
        r = await client.post("/api/resale/purchase", json={"ticket_id": ticket_id}, headers=bearer(buyer))
        if r.status_code == 200:
            wins[ticket_id] += 1
        return r.status_code in (200, 409, 400)

    result = await run_async(attempt, 64, 600, gateway, max_iterations=listings * buyers_per_listing)
    if any(n != 1 for n in wins.values()):
        raise CorrectnessError(f"resale rush: winners per listing {wins}")
    return [
        Row(f"resale rush: {listings} listings x {buyers_per_listing} buyers", "purchase attempts/s",
            round(result.rps, 1), "/s"),
        Row(f"resale rush: {listings} listings x {buyers_per_listing} buyers", "p99", round(result.p99_ms, 1), "ms"),
        Row(f"resale rush: {listings} listings x {buyers_per_listing} buyers", "listings with exactly one winner",
            sum(1 for n in wins.values() if n == 1), "count", f"== {listings}", True),
    ]


async def event_pipeline(gateway: str, data: Dataset, engine: Any, rate: int, seconds: int) -> list[Row]:
    """TicketPurchased committed by ordering → handled by resale, at a steady event rate."""
    per_checkout = 5
    checkouts = rate * seconds // per_checkout
    event_id = await _event(gateway, data, checkouts * per_checkout, "Pipeline")
    type_id = await _standard_type(gateway, event_id)
    started_at = None
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        async with engine.connect() as conn:
            started_at = await conn.scalar(text("SELECT now()"))
        interval = per_checkout / rate

        async def one(i: int) -> None:
            h = bearer(data.customers[i % len(data.customers)])
            await client.post("/api/cart/items", params={"ticket_type_id": type_id, "quantity": per_checkout}, headers=h)
            await client.post("/api/cart/checkout", headers=h)

        tasks = []
        for i in range(checkouts):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(interval)
        await asyncio.gather(*tasks)
    await asyncio.sleep(2)
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT extract(epoch FROM (i.handled_at - o.occurred_at)) * 1000 "
            "FROM ordering.outbox o LEFT JOIN resale.inbox i ON i.event_id = o.event_id "
            "WHERE o.type = 'ordering.TicketPurchased' AND o.occurred_at >= :t"), {"t": started_at})).all()
    lags = [r[0] for r in rows if r[0] is not None]
    lost = sum(1 for r in rows if r[0] is None)
    if lost:
        raise CorrectnessError(f"event pipeline: {lost} TicketPurchased events never reached resale")
    p99 = percentile(lags, 99)
    name = f"event pipeline: TicketPurchased -> resale at {rate} events/s"
    return [
        Row(name, "events", len(lags), "count"),
        Row(name, "p50", round(percentile(lags, 50), 1), "ms"),
        Row(name, "p99", round(p99, 1), "ms", "< 100", p99 < 100),
    ]


async def login_load(gateway: str, seconds: int, emails: list[str], password: str) -> tuple[list[Row], Result]:
    async def one(client: httpx.AsyncClient, i: int) -> bool:
        r = await client.post("/api/auth/token", data={"username": emails[i % len(emails)], "password": password})
        return r.status_code == 200

    r = await run_async(one, 8, seconds, gateway)
    return [Row("login: POST /api/auth/token c=8", "logins/s", round(r.rps, 1), "/s"),
            Row("login: POST /api/auth/token c=8", "p99", round(r.p99_ms, 1), "ms")], r
