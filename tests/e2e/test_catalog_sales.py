"""Catalog rules that depend on what ordering has sold (API.md §6.1, §6.5, §6.8, §7.3, §7.4),
with real purchases through ordering and no pause between the purchase and the rule."""

from __future__ import annotations

# ruff: noqa: F811  (test parameters name the fixtures imported from catalog_fixtures)
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import msgspec

from tests.support.actors import Account, active_customer
from tests.support.catalog_actors import approved_event, new_ticket_type
from tests.support.catalog_fixtures import admin, organizer, venue  # noqa: F401  (fixtures)
from tests.support.shop import (
    add,
    buy,
    db_rows,
    driver_dsn,
    eventually,
    holding,
    ticket_code,
    waiting_for_lock,
)
from tests.support.system import System

Request = Callable[[], Awaitable[httpx.Response]]
# The sale: sent with its COMMIT after the order's other statements (its confirmation mail's
# among them), which fill PostgreSQL's 1 kB of the query's text shown before sell_held.
SALE = "%Your Resellio order%"
LIMIT = "%sold <= $3%"  # catalog's limit on ordering's inventory
_TYPE_ROW_LOCKED = "SELECT FROM ordering.ticket_types WHERE type_id = $1 FOR UPDATE"


class Held(msgspec.Struct):
    """A new event's ticket type (5 tickets, "VIP") and a customer holding some in the cart."""

    event_name: str
    type_id: int
    buyer: Account

    @property
    def path(self) -> str:
        return f"/api/ticket-types/{self.type_id}"


async def in_a_cart(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any], quantity: int
) -> Held:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=5)
    buyer = await active_customer(api, admin)
    assert (await add(api, buyer, vip["type_id"], quantity)).status_code == 200
    return Held(event["name"], vip["type_id"], buyer)


async def sale_and_change(
    api: httpx.AsyncClient, system: System, held: Held, change: Request, change_first: bool
) -> tuple[httpx.Response, httpx.Response]:
    """The customer's checkout and an organizer's change of the type, both made to wait for
    the type's inventory row in ordering (as behind another buyer's sale committing), and
    served in the order given: each is started once the one before waits for the row."""
    sale: tuple[str, Request] = (
        SALE,
        lambda: api.post("/api/cart/checkout", headers=held.buyer.headers),
    )
    turns = [(LIMIT, change), sale] if change_first else [sale, (LIMIT, change)]
    async with holding(system, _TYPE_ROW_LOCKED, held.type_id):
        started = []
        for statement, request in turns:
            started.append(asyncio.create_task(request()))
            await waiting_for_lock(system, statement, started[-1])
    done = await asyncio.gather(*started)
    return (done[1], done[0]) if change_first else (done[0], done[1])


def lower_to_2(api: httpx.AsyncClient, held: Held, organizer: Account) -> Request:
    return lambda: api.put(held.path, json={"max_count": 2}, headers=organizer.headers)


async def sold_in_ordering(system: System, type_id: int) -> list[int]:
    rows = await db_rows(
        system,
        "SELECT sold, max_count FROM ordering.ticket_types WHERE type_id = :t",
        t=type_id,
    )
    return [rows[0].sold, rows[0].max_count]


async def test_max_count_never_below_what_was_just_sold(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=5)
    buyer = await active_customer(api, admin)
    await buy(api, buyer, vip["type_id"], 3)
    path = f"/api/ticket-types/{vip['type_id']}"
    refused = await api.put(path, json={"max_count": 2}, headers=organizer.headers)
    assert (refused.status_code, refused.json()["detail"]) == (
        400,
        "max_count cannot be lower than the number of tickets sold (3)",
    )
    exact = await api.put(path, json={"max_count": 3}, headers=organizer.headers)
    assert exact.status_code == 200 and exact.json()["max_count"] == 3


async def test_a_ticket_type_with_an_issued_ticket_cannot_be_deleted(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=5)
    await buy(api, await active_customer(api, admin), vip["type_id"], 1)
    refused = await api.delete(f"/api/ticket-types/{vip['type_id']}", headers=organizer.headers)
    assert (refused.status_code, refused.json()["detail"]) == (
        400,
        "Cannot delete a ticket type with sold tickets",
    )


async def test_a_capacity_lowered_while_a_sale_commits_counts_that_sale(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    """API.md §7.3: ordering never sells beyond max_count, even when sales race the change. A
    sale that commits after catalog counted what was sold is counted by ordering's limit."""
    held = await in_a_cart(api, admin, organizer, venue, 3)
    sale, lowering = await sale_and_change(
        api, system, held, lower_to_2(api, held, organizer), False
    )
    assert sale.status_code == 200, sale.text
    assert (lowering.status_code, lowering.json()["detail"]) == (
        400,
        "max_count cannot be lower than the number of tickets sold (3)",
    )
    assert await sold_in_ordering(system, held.type_id) == [3, 5]
    shown = await api.get("/api/ticket-types", params={"type_id": held.type_id})
    assert shown.json()[0]["max_count"] == 5


async def test_a_capacity_lowered_before_a_sale_commits_refuses_that_sale(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    held = await in_a_cart(api, admin, organizer, venue, 3)
    sale, lowering = await sale_and_change(
        api, system, held, lower_to_2(api, held, organizer), True
    )
    assert (lowering.status_code, lowering.json()["max_count"]) == (200, 2)
    assert (sale.status_code, sale.json()["detail"]) == (
        400,
        f"Not enough tickets available for '{held.event_name} - VIP'. Only 2 left.",
    )
    assert await sold_in_ordering(system, held.type_id) == [0, 2]
    assert (await api.get("/api/tickets", headers=held.buyer.headers)).json() == []


async def test_a_type_deleted_while_a_sale_commits_is_kept_with_that_sale(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    """API.md §7.4: after the deletion's answer no ticket of the type can be sold; a sale that
    commits first makes the deletion a 400."""
    held = await in_a_cart(api, admin, organizer, venue, 1)
    sale, deletion = await sale_and_change(
        api, system, held, lambda: api.delete(held.path, headers=organizer.headers), False
    )
    assert sale.status_code == 200, sale.text
    assert (deletion.status_code, deletion.json()["detail"]) == (
        400,
        "Cannot delete a ticket type with sold tickets",
    )
    assert await sold_in_ordering(system, held.type_id) == [1, 5]


async def test_a_type_deleted_before_a_sale_commits_sells_nothing(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    held = await in_a_cart(api, admin, organizer, venue, 1)
    sale, deletion = await sale_and_change(
        api, system, held, lambda: api.delete(held.path, headers=organizer.headers), True
    )
    assert (deletion.status_code, deletion.json()) == (200, True)
    assert sale.status_code == 400, sale.text
    assert (await sold_in_ordering(system, held.type_id))[0] == 0
    assert (await api.get("/api/tickets", headers=held.buyer.headers)).json() == []
    [order] = (await api.get("/api/orders", headers=held.buyer.headers)).json()
    assert order["status"] == "failed"  # charged, then given back (API.md §8.4)


async def test_a_lower_capacity_ordering_cannot_confirm_is_a_503_that_changes_nothing(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    """The type's row in ordering stays busy past the limit's bound (CATCH_UP_TIMEOUT_S): the
    change is a 503 and commits nothing; catalog tells the type again at a new revision, so a
    limit that reached ordering anyway would not stay."""
    held = await in_a_cart(api, admin, organizer, venue, 1)
    async with holding(system, _TYPE_ROW_LOCKED, held.type_id):
        lowering = await api.put(held.path, json={"max_count": 2}, headers=organizer.headers)
    assert (lowering.status_code, lowering.json()) == (503, {"detail": "Service unavailable"})
    shown = await api.get("/api/ticket-types", params={"type_id": held.type_id})
    assert shown.json()[0]["max_count"] == 5
    told = await db_rows(
        system,
        "SELECT (payload->>'max_count')::int AS max_count, (payload->>'revision')::bigint AS rev"
        " FROM catalog.outbox WHERE type = 'catalog.TicketTypeUpdated'"
        " AND (payload->>'type_id')::int = :t",
        t=held.type_id,
    )
    assert [(row.max_count, row.rev > 0) for row in told] == [(5, True)]

    async def ordering_told() -> bool:
        return await sold_in_ordering(system, held.type_id) == [0, 5]

    assert await eventually(ordering_told)


_GONE_BEFORE_COMMIT = """
CREATE FUNCTION catalog.test_gone_before_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'terminating connection (a test)' USING ERRCODE = '57P01'; END $$;
CREATE TRIGGER test_gone_before_update BEFORE UPDATE ON catalog.ticket_types FOR EACH ROW
WHEN (NEW.max_count <> OLD.max_count) EXECUTE FUNCTION catalog.test_gone_before_commit();
CREATE TRIGGER test_gone_before_delete BEFORE DELETE ON catalog.ticket_types FOR EACH ROW
EXECUTE FUNCTION catalog.test_gone_before_commit();
CREATE TRIGGER test_gone_before_announce BEFORE UPDATE ON catalog.ticket_types FOR EACH ROW
WHEN (NEW.max_count = OLD.max_count) EXECUTE FUNCTION catalog.test_gone_before_commit();
"""
_BACK = """
DROP TRIGGER test_gone_before_update ON catalog.ticket_types;
DROP TRIGGER test_gone_before_delete ON catalog.ticket_types;
DROP TRIGGER test_gone_before_announce ON catalog.ticket_types;
DROP FUNCTION catalog.test_gone_before_commit();
"""


async def test_a_lower_capacity_catalog_could_not_commit_is_given_back_to_ordering(
    api: httpx.AsyncClient, system: System, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    """Ordering applies the limit; then catalog's database goes away before the change
    commits, and stays away a moment longer (triggers play it, the type's announcement
    failing too): a 503 that changes nothing, in ordering too, which is told the type as
    committed again once the database is back. Before, ordering kept the lower capacity (or 0
    for a deletion) and sold no more than that."""
    held = await in_a_cart(api, admin, organizer, venue, 1)
    conn = await asyncpg.connect(driver_dsn(system))
    try:
        await conn.execute(_GONE_BEFORE_COMMIT)
        try:
            lowering = await api.put(held.path, json={"max_count": 2}, headers=organizer.headers)
            deleting = await api.delete(held.path, headers=organizer.headers)
        finally:
            await conn.execute(_BACK)
    finally:
        await conn.close()
    for failed in (lowering, deleting):
        assert failed.status_code == 503, failed.text
    shown = await api.get("/api/ticket-types", params={"type_id": held.type_id})
    assert shown.json()[0]["max_count"] == 5

    async def ordering_told() -> bool:
        return await sold_in_ordering(system, held.type_id) == [0, 5]

    assert await eventually(ordering_told)


async def test_notify_counts_distinct_holders_of_valid_tickets(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=10)
    first, second = await active_customer(api, admin), await active_customer(api, admin)
    await buy(api, first, vip["type_id"], 2)
    await buy(api, second, vip["type_id"], 1)
    path = f"/api/events/{event['event_id']}/notify"
    told = await api.post(path, json={"message": "Bring an umbrella"}, headers=organizer.headers)
    assert told.status_code == 200 and told.json()["recipients_affected"] == 2

    # Cancelling is allowed with sales; once refunded, nobody holds a valid ticket.
    cancelled = await api.delete(f"/api/events/{event['event_id']}", headers=organizer.headers)
    assert cancelled.status_code == 200 and cancelled.json() is True

    async def nobody_left() -> bool:
        again = await api.post(path, headers=organizer.headers)
        return again.status_code == 200 and again.json()["recipients_affected"] == 0

    assert await eventually(nobody_left)


async def test_notify_reaches_every_holder_it_counts_those_checked_in_too(
    api: httpx.AsyncClient,
    system: System,
    admin: str,
    organizer: Account,
    venue: dict[str, Any],
) -> None:
    """§6.8: the count is the number emailed. A ticket checked in is still held (it is
    refunded that makes it no longer valid, §9.2): its holder is at the event, counted and
    emailed."""
    event = await approved_event(api, admin, organizer, venue["location_id"])
    vip = await new_ticket_type(api, organizer, event["event_id"], max_count=10)
    inside, outside = await active_customer(api, admin), await active_customer(api, admin)
    [entered] = await buy(api, inside, vip["type_id"], 1)
    await buy(api, outside, vip["type_id"], 1)
    code = await ticket_code(system, entered["ticket_id"])
    scan = await api.post("/api/tickets/check-in", json={"code": code}, headers=organizer.headers)
    assert scan.status_code == 200, scan.text
    path = f"/api/events/{event['event_id']}/notify"
    told = await api.post(path, json={"message": "Doors close at ten"}, headers=organizer.headers)
    assert told.status_code == 200 and told.json()["recipients_affected"] == 2
    subject = f"News about {event['name']}"

    async def both_emailed() -> bool:
        news = [
            [m for m in system.mails(h.email) if m["Subject"] == subject] for h in (inside, outside)
        ]
        return [len(n) for n in news] == [1, 1]

    assert await eventually(both_emailed)


async def test_sold_out_events_leave_the_available_filter(
    api: httpx.AsyncClient, admin: str, organizer: Account, venue: dict[str, Any]
) -> None:
    event = await approved_event(api, admin, organizer, venue["location_id"], total_tickets=2)
    params = {"search": event["name"], "has_available_tickets": "true"}
    assert len((await api.get("/api/events", params=params)).json()) == 1
    await buy(api, await active_customer(api, admin), (await _types(api, event))[0]["type_id"], 2)

    async def sold_out() -> bool:
        listed = await api.get("/api/events", params=params)
        return listed.json() == [] and listed.headers["x-total-count"] == "0"

    assert await eventually(sold_out)
    unsold = await api.get("/api/events", params={**params, "has_available_tickets": "false"})
    assert [e["event_id"] for e in unsold.json()] == [event["event_id"]]


async def _types(api: httpx.AsyncClient, event: dict[str, Any]) -> list[dict[str, Any]]:
    response = await api.get("/api/ticket-types", params={"event_id": event["event_id"]})
    return response.json()  # type: ignore[no-any-return]
