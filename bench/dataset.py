"""A realistic dataset, loaded through the public API like real users would."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

ADMIN = ("admin@resellio.com", "AdminPassword123!")
PASSWORD = "BenchPassw0rd"


@dataclass
class Dataset:
    admin: str
    organizer: str
    event_ids: list[int] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)  # access tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str) -> str:
    r = await client.post("/api/auth/token", data={"username": email, "password": password})
    r.raise_for_status()
    return str(r.json()["token"])


async def new_customer(client: httpx.AsyncClient, admin: str, tag: str) -> str:
    """Register a customer and have the admin activate it; returns its access token."""
    email = f"bench-{tag}-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post(
        "/api/auth/register/customer",
        json={
            "email": email,
            "login": email,
            "password": PASSWORD,
            "first_name": "Bench",
            "last_name": tag,
        },
    )
    r.raise_for_status()
    user_id = r.json()["user_id"]
    r = await client.post(f"/api/auth/approve-user/{user_id}", headers=bearer(admin))
    r.raise_for_status()
    return str(r.json()["token"])


async def new_organizer(client: httpx.AsyncClient, admin: str) -> str:
    email = f"bench-org-{uuid.uuid4().hex[:8]}@example.com"
    r = await client.post(
        "/api/auth/register/organizer",
        json={
            "email": email,
            "login": email,
            "password": PASSWORD,
            "first_name": "Org",
            "last_name": "Bench",
            "company_name": "Bench Events",
        },
    )
    r.raise_for_status()
    me = await client.get("/api/user/me", headers=bearer(r.json()["token"]))
    organizer_id = me.json()["organizer_id"]
    r = await client.post(
        "/api/auth/verify-organizer",
        json={"organizer_id": organizer_id, "approve": True},
        headers=bearer(admin),
    )
    r.raise_for_status()
    return await login(client, email, PASSWORD)


async def new_event(
    client: httpx.AsyncClient,
    admin: str,
    organizer: str,
    location_id: int,
    name: str,
    capacity: int,
    price: float,
    days_ahead: int = 30,
) -> int:
    start = datetime.now(UTC) + timedelta(days=days_ahead)
    r = await client.post(
        "/api/events",
        json={
            "name": name,
            "description": f"{name}: a benchmark event",
            "start_date": start.isoformat(),
            "end_date": (start + timedelta(hours=4)).isoformat(),
            "minimum_age": 0,
            "location_id": location_id,
            "category": ["music", "bench"],
            "total_tickets": capacity,
            "standard_ticket_price": price,
            "ticket_sales_start": "2020-01-01T00:00:00",
        },
        headers=bearer(organizer),
    )
    r.raise_for_status()
    event_id = int(r.json()["event_id"])
    r = await client.post(f"/api/events/authorize/{event_id}", headers=bearer(admin))
    r.raise_for_status()
    return event_id


async def gather_limited(n: int, limit: int, make: object) -> list[object]:
    semaphore = asyncio.Semaphore(limit)

    async def one(i: int) -> object:
        async with semaphore:
            return await make(i)  # type: ignore[operator]

    return await asyncio.gather(*(one(i) for i in range(n)))


async def load(base_url: str, events: int, customers: int) -> Dataset:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        admin = await login(client, *ADMIN)
        organizer = await new_organizer(client, admin)
        locations = []
        for i, city in enumerate(["Warsaw", "Krakow", "Gdansk", "Berlin", "Prague"]):
            r = await client.post(
                "/api/locations",
                json={
                    "name": f"Bench Hall {i} {uuid.uuid4().hex[:4]}",
                    "address": f"Main St {i}",
                    "city": city,
                    "country": "PL",
                    "zipcode": "00-001",
                },
                headers=bearer(admin),
            )
            r.raise_for_status()
            locations.append(r.json()["location_id"])
        data = Dataset(admin=admin, organizer=organizer)
        data.event_ids = [
            int(e)
            for e in await gather_limited(
                events,
                8,
                lambda i: new_event(
                    client,
                    admin,
                    organizer,
                    locations[i % len(locations)],
                    f"Bench Concert {i}",
                    500 + i,
                    20 + (i % 10) * 15,
                    10 + i % 200,
                ),
            )
        ]
        data.customers = [
            str(t)
            for t in await gather_limited(
                customers, 8, lambda i: new_customer(client, admin, str(i))
            )
        ]
        return data
