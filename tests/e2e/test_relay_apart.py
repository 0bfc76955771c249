"""The outbox relays in a process of their own (`resellio relay`, services started with
RESELLIO_RELAY=external): every event still travels, and while the relay is down events wait
in the outboxes (the services go on answering) until it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.actors import active_customer, admin_token
from tests.support.resale_actors import (
    holder_of,
    listed,
    my_tickets,
    organizer_event,
    purchase,
    resell,
)
from tests.support.shop import OnSale, db_rows, eventually
from tests.support.system import System, running


@pytest.fixture(scope="module")
def apart() -> Iterator[System]:
    with running({"RESELLIO_RELAY": "external"}) as system:
        yield system


@pytest.fixture(scope="module")
async def gateway(apart: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=apart.gateway_url, timeout=30) as client:
        yield client


async def _unpublished(system: System, schema: str) -> int:
    rows = await db_rows(system, f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
    return int(rows[0][0])


async def test_every_service_publishes_through_the_relay_process(
    gateway: httpx.AsyncClient, apart: System
) -> None:
    """A resale sale needs each hop: catalog's events put the ticket type on sale in ordering,
    ordering's TicketPurchased lets resale list it, resale's ListingSold moves it."""
    admin = await admin_token(gateway)
    seller = await listed(gateway, admin, price=45)
    buyer = await active_customer(gateway, admin)
    bought = await purchase(gateway, buyer, seller.ticket_id)
    assert bought.status_code == 200, bought.text
    assert bought.json()["owner_id"] == buyer.user_id
    assert [t["ticket_id"] for t in await my_tickets(gateway, buyer)] == [seller.ticket_id]
    for schema in ("auth", "catalog", "ordering", "resale"):
        assert await eventually(lambda s=schema: _no_backlog(apart, s)), schema


async def _on_sale_in_ordering(system: System, event: OnSale) -> bool:
    rows = await db_rows(
        system,
        "SELECT e.status FROM ordering.events e JOIN ordering.ticket_types t"
        " ON t.event_id = e.event_id WHERE e.event_id = :e AND t.type_id = :t",
        e=event.event_id,
        t=event.type_id,
    )
    return bool(rows) and rows[0][0] == "created"


async def _no_backlog(system: System, schema: str) -> bool:
    return await _unpublished(system, schema) == 0


async def test_events_wait_in_the_outbox_while_the_relay_is_down(
    gateway: httpx.AsyncClient, apart: System
) -> None:
    admin = await admin_token(gateway)
    event = await organizer_event(gateway, admin)
    # Ordering has heard that the event is on sale before the relay stops.
    assert await eventually(lambda: _on_sale_in_ordering(apart, event))
    apart.stop_app("relay")
    try:
        # The purchase commits; its TicketPurchased stays in ordering's outbox.
        seller = await holder_of(gateway, admin, event)
        assert await _unpublished(apart, "ordering") > 0
        listing = await resell(gateway, seller.account, seller.ticket_id, 50)
        # Resale has not heard of the ticket yet: it cannot list it (API.md §1.8's wait ran out).
        assert (listing.status_code, listing.json()) == (404, {"detail": "Ticket not found"})
    finally:
        apart.start_relay()
    assert await eventually(lambda: _no_backlog(apart, "ordering"))
    listing = await resell(gateway, seller.account, seller.ticket_id, 50)
    assert listing.status_code == 200, listing.text
