"""Test helpers for resale: a customer holding a ticket of an approved event, listing it,
buying it. Everything goes through the gateway like a real client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.actors import Account, active_customer, verified_organizer
from tests.support.shop import OnSale, buy, db_rows, event_on_sale
from tests.support.system import System


@dataclass
class Holder:
    """A customer with one valid ticket of `event`."""

    account: Account
    ticket: dict[str, Any]
    event: OnSale

    @property
    def ticket_id(self) -> int:
        return int(self.ticket["ticket_id"])


async def organizer_event(
    api: httpx.AsyncClient, admin: str, *, cap: int | None = None, **kwargs: Any
) -> OnSale:
    """An approved event on sale by a new verified organizer (with a resale cap if given)."""
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer, **kwargs)
    if cap is not None:
        response = await api.put(
            f"/api/events/{event.event_id}",
            json={"resale_price_cap_percent": cap},
            headers=organizer.headers,
        )
        assert response.status_code == 200, response.text
    return event


async def holder_of(api: httpx.AsyncClient, admin: str, event: OnSale, quantity: int = 1) -> Holder:
    """A new customer who bought `quantity` tickets of the event (the first one kept)."""
    account = await active_customer(api, admin)
    tickets = await buy(api, account, event.type_id, quantity)
    return Holder(account, tickets[0], event)


async def holder(api: httpx.AsyncClient, admin: str, **kwargs: Any) -> Holder:
    """A customer holding a ticket of a fresh approved event (price 50 unless told)."""
    return await holder_of(api, admin, await organizer_event(api, admin, **kwargs))


async def resell(
    api: httpx.AsyncClient, who: Account, ticket_id: int, price: Any = None, **body: Any
) -> httpx.Response:
    payload = {"price": price, **body} if price is not None else body
    return await api.post(f"/api/tickets/{ticket_id}/resell", json=payload, headers=who.headers)


async def withdraw(api: httpx.AsyncClient, who: Account, ticket_id: int) -> httpx.Response:
    return await api.delete(f"/api/tickets/{ticket_id}/resell", headers=who.headers)


async def listed(api: httpx.AsyncClient, admin: str, price: float = 60.0, **kwargs: Any) -> Holder:
    """A holder whose ticket is listed at `price`."""
    seller = await holder(api, admin, **kwargs)
    response = await resell(api, seller.account, seller.ticket_id, price)
    assert response.status_code == 200, response.text
    return seller


async def purchase(
    api: httpx.AsyncClient, buyer: Account, ticket_id: int, key: str | None = None, **body: Any
) -> httpx.Response:
    headers = {**buyer.headers, **({"Idempotency-Key": key} if key else {})}
    return await api.post(
        "/api/resale/purchase", json={"ticket_id": ticket_id, **body}, headers=headers
    )


async def marketplace(
    api: httpx.AsyncClient, who: Account | None = None, **params: Any
) -> httpx.Response:
    headers = who.headers if who else {}
    return await api.get("/api/resale/marketplace", params=params, headers=headers)


async def my_tickets(api: httpx.AsyncClient, who: Account, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/api/tickets", params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def resale_charges(system: System, ticket_id: int) -> list[Any]:
    """The payment ledger rows (state, amount, refunded) of every resale purchase of a ticket."""
    return await db_rows(
        system,
        "SELECT p.state, p.amount, p.refunded FROM resale.payments p "
        "JOIN resale.purchases s ON p.authorize_key = 'resale-purchase-' || s.purchase_id || "
        "'-authorize' WHERE s.ticket_id = :t",
        t=ticket_id,
    )
