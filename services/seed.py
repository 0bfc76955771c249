"""Demo data (`resellio seed`): venues, a verified organizer with approved upcoming events,
and activated customers. Idempotent; goes through the auth and catalog HTTP APIs like any
client, so every rule and every event applies."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.kernel.settings import Settings

PASSWORD = "DemoPassword123!"
ORGANIZER = {
    "email": "organizer@resellio.com",
    "login": "demo_organizer",
    "first_name": "Olivia",
    "last_name": "Stage",
    "company_name": "Resellio Live Demo",
}
CUSTOMERS = [
    {"email": "customer1@resellio.com", "login": "demo_customer1", "first_name": "Carl"},
    {"email": "customer2@resellio.com", "login": "demo_customer2", "first_name": "Cleo"},
    {"email": "customer3@resellio.com", "login": "demo_customer3", "first_name": "Chris"},
]
VENUES = [
    {
        "name": "Arena Warszawa",
        "address": "ul. Stadionowa 1",
        "city": "Warsaw",
        "country": "Poland",
        "zipcode": "00-001",
    },
    {
        "name": "Blue Note Club",
        "address": "131 W 3rd St",
        "city": "New York",
        "country": "USA",
        "zipcode": "10012",
    },
    {
        "name": "Grand Theatre",
        "address": "Plac Teatralny 1",
        "city": "Warsaw",
        "country": "Poland",
        "zipcode": "00-950",
    },
    {"name": "Riverside Park", "address": "Riverside Dr", "city": "London", "country": "UK"},
]
# (name, venue, days from now, hours long, categories, minimum age, [(type, price, count)])
EVENTS = [
    (
        "Summer Rock Festival",
        "Riverside Park",
        30,
        10,
        ["Music", "Festival"],
        16,
        [("Standard Ticket", "89.00", 500), ("VIP", "249.00", 50), ("Early Bird", "59.00", 100)],
    ),
    (
        "Late Night Jazz",
        "Blue Note Club",
        12,
        3,
        ["Music", "Jazz"],
        18,
        [("Standard Ticket", "35.00", 120), ("Table for two", "120.00", 20)],
    ),
    (
        "Hamlet",
        "Grand Theatre",
        21,
        3,
        ["Theatre"],
        None,
        [("Standard Ticket", "45.00", 300), ("Balcony", "25.00", 80), ("Box", "150.00", 12)],
    ),
    (
        "City Derby",
        "Arena Warszawa",
        45,
        2,
        ["Sport", "Football"],
        None,
        [("Standard Ticket", "60.00", 2000), ("Family pack", "180.00", 200)],
    ),
    ("Stand-up Night", "Blue Note Club", 7, 2, ["Comedy"], 18, [("Standard Ticket", "20.00", 150)]),
]


class SeedError(Exception):
    """A step of the seeding failed; the message says which and what the service answered."""


def _check(response: httpx.Response, *ok: int) -> Any:
    if response.status_code not in ok:
        request = response.request
        raise SeedError(
            f"{request.method} {request.url.path} → {response.status_code} {response.text}"
        )
    return response.json() if response.content else None


@dataclass
class Seeder:
    auth: httpx.AsyncClient
    catalog: httpx.AsyncClient
    admin_email: str
    admin_password: str

    async def login(self, email: str, password: str) -> httpx.Response:
        return await self.auth.post(
            "/api/auth/token", data={"username": email, "password": password}
        )

    async def token(self, email: str, password: str) -> str:
        return str(_check(await self.login(email, password), 200)["token"])

    async def venues(self, admin: str) -> dict[str, int]:
        existing = {
            v["name"]: v["location_id"]
            for v in _check(await self.catalog.get("/api/locations"), 200)
        }
        for venue in VENUES:
            if venue["name"] not in existing:
                made = _check(
                    await self.catalog.post("/api/locations", json=venue, headers=_bearer(admin)),
                    200,
                )
                existing[venue["name"]] = made["location_id"]
        return existing

    async def organizer(self, admin: str) -> str:
        body = {**ORGANIZER, "password": PASSWORD}
        registered = await self.auth.post("/api/auth/register/organizer", json=body)
        _check(registered, 201, 400)
        answer = _check(await self.login(ORGANIZER["email"], PASSWORD), 200)
        if answer["token"]:
            return str(answer["token"])
        pending = _check(
            await self.auth.get("/api/auth/pending-organizers", headers=_bearer(admin)), 200
        )
        mine = [u for u in pending if u["email"].lower() == ORGANIZER["email"]]
        if not mine:
            raise SeedError(f"{ORGANIZER['email']} is neither verified nor pending (banned?)")
        decision = {"organizer_id": mine[0]["organizer_id"], "approve": True}
        _check(
            await self.auth.post(
                "/api/auth/verify-organizer", json=decision, headers=_bearer(admin)
            ),
            200,
        )
        return await self.token(ORGANIZER["email"], PASSWORD)

    async def events(
        self, admin: str, organizer: str, venues: dict[str, int]
    ) -> list[dict[str, Any]]:
        me = _check(await self.auth.get("/api/user/me", headers=_bearer(organizer)), 200)
        listed = await self.catalog.get(
            "/api/events",
            params={"organizer_id": me["organizer_id"], "limit": 100},
            headers=_bearer(organizer),
        )
        mine = {e["name"]: e for e in _check(listed, 200)}
        today = datetime.now(UTC).replace(hour=19, minute=0, second=0, microsecond=0)
        for name, venue, days, hours, categories, age, types in EVENTS:
            event = mine.get(name)
            if event is None:
                start = today + timedelta(days=days)
                (_, standard_price, standard_count), *extra = types
                body = {
                    "name": name,
                    "description": f"{name} at {venue}. Demo event.",
                    "start_date": start.isoformat(),
                    "end_date": (start + timedelta(hours=hours)).isoformat(),
                    "location_id": venues[venue],
                    "category": categories,
                    "minimum_age": age,
                    "total_tickets": standard_count,
                    "standard_ticket_price": standard_price,
                    "ticket_sales_start": datetime.now(UTC).isoformat(),
                }
                event = _check(
                    await self.catalog.post("/api/events", json=body, headers=_bearer(organizer)),
                    200,
                )
                for description, price, max_count in extra:
                    ticket_type = {
                        "event_id": event["event_id"],
                        "description": description,
                        "price": price,
                        "max_count": max_count,
                        "available_from": datetime.now(UTC).isoformat(),
                    }
                    _check(
                        await self.catalog.post(
                            "/api/ticket-types", json=ticket_type, headers=_bearer(organizer)
                        ),
                        200,
                    )
            if event["status"] == "pending":
                path = f"/api/events/authorize/{event['event_id']}"
                _check(await self.catalog.post(path, headers=_bearer(admin)), 200)
            mine[name] = event
        return [mine[name] for name, *_ in EVENTS]

    async def customer(self, admin: str, fields: dict[str, str]) -> None:
        body = {**fields, "last_name": "Demo", "password": PASSWORD}
        registered = await self.auth.post("/api/auth/register/customer", json=body)
        _check(registered, 201, 400)
        user_id = registered.json().get("user_id") if registered.status_code == 201 else None
        if user_id is None:
            answer = await self.login(fields["email"], PASSWORD)
            if answer.status_code == 200:
                return
            found = await self.auth.get(
                "/api/auth/users", params={"search": fields["email"]}, headers=_bearer(admin)
            )
            matches = [u for u in _check(found, 200) if u["email"].lower() == fields["email"]]
            if not matches or matches[0]["account_state"] != "unverified":
                raise SeedError(f"{fields['email']} cannot sign in: {answer.text}")
            user_id = matches[0]["user_id"]
        _check(
            await self.auth.post(f"/api/auth/approve-user/{user_id}", headers=_bearer(admin)), 200
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(settings: Settings) -> list[str]:
    """Load the demo data; returns the lines to print (credentials and what exists)."""
    async with (
        httpx.AsyncClient(base_url=settings.url_of("auth"), timeout=30) as auth,
        httpx.AsyncClient(base_url=settings.url_of("catalog"), timeout=30) as catalog,
    ):
        seeder = Seeder(
            auth,
            catalog,
            os.environ.get("INITIAL_ADMIN_EMAIL", "admin@resellio.com"),
            os.environ.get("INITIAL_ADMIN_PASSWORD", "AdminPassword123!"),
        )
        admin = await seeder.token(seeder.admin_email, seeder.admin_password)
        venues = await seeder.venues(admin)
        organizer = await seeder.organizer(admin)
        events = await seeder.events(admin, organizer, venues)
        for fields in CUSTOMERS:
            await seeder.customer(admin, fields)
    lines = [f"Demo data: {len(venues)} venues, {len(events)} approved events:"]
    lines += [f"  #{e['event_id']} {e['name']} ({e['start_date'][:10]})" for e in events]
    lines.append("Demo accounts:")
    shown = seeder.admin_password if settings.development else "(INITIAL_ADMIN_PASSWORD)"
    lines.append(f"  administrator  {seeder.admin_email} / {shown}")
    lines.append(f"  organizer      {ORGANIZER['email']} / {PASSWORD}")
    lines += [f"  customer       {c['email']} / {PASSWORD}" for c in CUSTOMERS]
    return lines


def main(settings: Settings) -> None:
    for line in asyncio.run(seed(settings)):
        print(line)
