"""The access control matrix (issue 9): every endpoint of API.md × every kind of caller, with
the status each one gets, in ONE table (MATRIX). A guard test fails when a route exists in the
gateway's merged OpenAPI document or in a service's route table without a row here.

The objects named in paths (cart item, order, ticket, listing, purchase, event, ticket type,
location, user) belong to the "customer" and "organizer" callers. Where the allowed caller's
success would destroy the object (ban, cancel, delete, check in), the row aims at an object on
which the allowed caller gets that endpoint's own 4xx (e.g. "already banned"), which is only
reached past the guards; the cart line to remove is made fresh for its row. A list that every
caller may ask for (cart, orders, tickets, listings) is checked for whose objects it shows:
the customer's answer shows the customer's, every other caller's shows none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.auth import api as auth_api
from services.catalog import api as catalog_api
from services.ordering import api as ordering_api
from services.resale import api as resale_api
from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    bearer,
    register_organizer,
    verified_organizer,
)
from tests.support.resale_actors import listed, purchase
from tests.support.shop import (
    add,
    approve,
    buy,
    create_event,
    db_rows,
    event_on_sale,
    ticket_code,
    ticket_type,
)
from tests.support.system import System

CALLERS = (
    "anonymous",
    "customer",
    "other_customer",
    "organizer",
    "other_organizer",
    "unverified_organizer",
    "banned",
    "administrator",
)


@dataclass
class World:
    tokens: dict[str, str | None]
    customer: Account
    event_id: int
    type_id: int
    location_id: int
    ended_event_id: int
    cart_item_id: int
    order_id: int
    listed_ticket: int
    listed_code: str
    other_ticket: int
    bought_ticket: int  # bought from another customer's listing
    purchase_id: int
    banned_user_id: int
    organizer_id: int
    api: httpx.AsyncClient


Ids = Callable[[World], Awaitable[dict[str, Any]] | dict[str, Any]]


@dataclass(frozen=True)
class Mine:
    """The customer's objects in a list answer, each item named by `key`: the customer's 200
    shows every one of `ids` (so the check is not vacuous), any other caller's 200 none."""

    key: str
    ids: Callable[[World], set[int]]


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # the path template as the OpenAPI document names it
    expect: tuple[int, ...]  # one status per caller, in CALLERS order
    ids: Ids = lambda w: {}
    json: Any = None
    data: dict[str, str] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    mine: Mine | None = None


# Guard shorthands (API.md §2.4). A banned caller's token is refused at the gateway (403)
# wherever a token is read; auth's public endpoints and the gateway's own pages ignore it.
def anyone(status: int) -> tuple[int, ...]:
    return (status,) * 8


def public(status: int) -> tuple[int, ...]:
    return (status, status, status, status, status, status, 403, status)


def admin_only(status: int) -> tuple[int, ...]:
    return (401, 403, 403, 403, 403, 403, 403, status)


def signed_in(status: int) -> tuple[int, ...]:
    return (401, status, status, status, status, status, 403, status)


def customers(mine: int, theirs: int) -> tuple[int, ...]:
    return (401, mine, theirs, 403, 403, 403, 403, 403)


def organizers(mine: int, theirs: int, admin: int = 403) -> tuple[int, ...]:
    """[O] (an administrator is "Not an organizer" unless stated)."""
    return (401, 403, 403, mine, theirs, 403, 403, admin)


def owner_only(mine: int, theirs: int) -> tuple[int, ...]:
    """[U] with an owner check: only the customer holds the ticket (or made the purchase)."""
    return (401, mine, theirs, theirs, theirs, theirs, 403, theirs)


async def fresh_cart_line(w: World) -> dict[str, Any]:
    response = await add(w.api, w.customer, w.type_id)
    assert response.status_code == 200, response.text
    return {"cart_item_id": response.json()["cart_item_id"]}


PASSWORD_OK = "Another123!"

MATRIX: tuple[Row, ...] = (
    # ---- the gateway's own pages (§1.1)
    Row("GET", "/", anyone(200)),
    Row("GET", "/health", anyone(200)),
    Row("GET", "/docs", anyone(200)),
    Row("GET", "/docs/openapi.json", anyone(200)),
    # ---- auth (§3)
    Row("POST", "/api/auth/register/customer", anyone(422), json={}),
    Row("POST", "/api/auth/register/organizer", anyone(422), json={}),
    Row("POST", "/api/auth/register/admin", admin_only(422), json={}),
    Row(
        "POST",
        "/api/auth/token",
        anyone(401),
        data={"username": "nobody@example.com", "password": "Wrong123!"},
    ),
    Row("POST", "/api/auth/refresh", anyone(401), json={"refresh_token": "nope"}),
    Row("GET", "/api/auth/.well-known/jwks.json", anyone(200)),
    Row("GET", "/api/auth/verify-email", anyone(400), query={"token": "nope"}),
    Row("POST", "/api/auth/resend-verification", anyone(200), json={"email": "no@example.com"}),
    Row("POST", "/api/auth/request-password-reset", anyone(200), json={"email": "no@example.com"}),
    Row(
        "POST",
        "/api/auth/reset-password",
        anyone(400),
        json={"token": "nope", "new_password": PASSWORD_OK},
    ),
    Row(
        "POST",
        "/api/auth/verify-organizer",
        admin_only(200),  # repeating the approval changes nothing
        ids=lambda w: {"_json": {"organizer_id": w.organizer_id, "approve": True}},
    ),
    Row("GET", "/api/auth/pending-organizers", admin_only(200)),
    Row(
        "POST",
        "/api/auth/approve-user/{user_id}",
        admin_only(400),  # "User is active"
        ids=lambda w: {"user_id": w.customer.user_id},
    ),
    Row(
        "POST",
        "/api/auth/ban-user/{user_id}",
        admin_only(400),  # "User is already banned"
        ids=lambda w: {"user_id": w.banned_user_id},
    ),
    Row(
        "POST",
        "/api/auth/unban-user/{user_id}",
        admin_only(400),  # "User is not banned"
        ids=lambda w: {"user_id": w.customer.user_id},
    ),
    Row("GET", "/api/auth/users", admin_only(200)),
    Row("GET", "/api/auth/users/stats", admin_only(200)),
    Row(
        "GET",
        "/api/auth/users/{user_id}",
        admin_only(200),
        ids=lambda w: {"user_id": w.customer.user_id},
    ),
    # ---- users (§4)
    Row("GET", "/api/user/me", signed_in(200)),
    Row("PUT", "/api/user/update-profile", signed_in(200), json={}),
    Row(
        "GET",
        "/api/user/profile/{user_id}",
        signed_in(200),
        ids=lambda w: {"user_id": w.customer.user_id},
    ),
    Row(
        "POST",
        "/api/user/change-password",
        signed_in(400),  # "Current password is incorrect"
        json={"current_password": "Wrong123!", "new_password": PASSWORD_OK},
    ),
    # ---- locations (§5)
    Row("GET", "/api/locations", public(200)),
    Row("POST", "/api/locations", admin_only(422), json={}),
    Row(
        "PUT",
        "/api/locations/{location_id}",
        admin_only(200),
        json={},
        ids=lambda w: {"location_id": w.location_id},
    ),
    Row(
        "DELETE",
        "/api/locations/{location_id}",
        admin_only(400),  # "Cannot delete a location that is used by events"
        ids=lambda w: {"location_id": w.location_id},
    ),
    # ---- events (§6)
    Row("GET", "/api/events", public(200)),
    Row("GET", "/api/events/{event_id}", public(200), ids=lambda w: {"event_id": w.event_id}),
    Row("POST", "/api/events", organizers(422, 422), json={}),
    Row(
        "PUT",
        "/api/events/{event_id}",
        organizers(200, 403),
        json={},
        ids=lambda w: {"event_id": w.event_id},
    ),
    Row(
        "DELETE",
        "/api/events/{event_id}",
        organizers(400, 403, admin=400),  # "Cannot cancel an event that has already ended"
        ids=lambda w: {"event_id": w.ended_event_id},
    ),
    Row(
        "POST",
        "/api/events/authorize/{event_id}",
        admin_only(400),  # already approved
        ids=lambda w: {"event_id": w.event_id},
    ),
    Row(
        "POST",
        "/api/events/reject/{event_id}",
        admin_only(400),
        ids=lambda w: {"event_id": w.event_id},
    ),
    Row(
        "POST",
        "/api/events/{event_id}/notify",
        organizers(200, 403),
        json={"message": "Doors open at 7"},
        ids=lambda w: {"event_id": w.event_id},
    ),
    # ---- ticket types (§7)
    Row("GET", "/api/ticket-types", public(200)),
    Row(
        "POST",
        "/api/ticket-types",
        organizers(422, 403),  # the owner passes to the other fields' 422
        ids=lambda w: {"_json": {"event_id": w.event_id}},
    ),
    Row(
        "PUT",
        "/api/ticket-types/{type_id}",
        organizers(200, 403),
        json={},
        ids=lambda w: {"type_id": w.type_id},
    ),
    Row(
        "DELETE",
        "/api/ticket-types/{type_id}",
        organizers(400, 403),  # "Cannot delete a ticket type with sold tickets"
        ids=lambda w: {"type_id": w.type_id},
    ),
    # ---- cart, checkout, orders (§8)
    Row(
        "GET",
        "/api/cart/items",
        customers(200, 200),
        mine=Mine("cart_item_id", lambda w: {w.cart_item_id}),
    ),
    Row(
        "POST",
        "/api/cart/items",
        customers(400, 400),  # "Quantity must be at least 1"
        ids=lambda w: {"_json": {"ticket_type_id": w.type_id, "quantity": 0}},
    ),
    Row(
        "DELETE",
        "/api/cart/items/{cart_item_id}",
        customers(200, 404),
        ids=fresh_cart_line,
    ),
    Row(
        "POST",
        "/api/cart/checkout",
        customers(402, 400),  # a declined card keeps the cart; the other cart is empty
        json={"payment_token": "tok_card_declined"},
    ),
    Row("GET", "/api/orders", customers(200, 200), mine=Mine("order_id", lambda w: {w.order_id})),
    Row(
        "GET",
        "/api/orders/{order_id}",
        customers(200, 404),
        ids=lambda w: {"order_id": w.order_id},
    ),
    # ---- tickets (§9)
    Row(
        "GET",
        "/api/tickets",
        signed_in(200),
        mine=Mine("ticket_id", lambda w: {w.listed_ticket, w.other_ticket, w.bought_ticket}),
    ),
    Row(
        "GET",
        "/api/tickets/{ticket_id}/download",
        owner_only(200, 404),
        ids=lambda w: {"ticket_id": w.listed_ticket},
    ),
    Row(
        "POST",
        "/api/tickets/check-in",
        organizers(409, 403),  # the event's organizer passes to "Ticket is listed for resale"
        ids=lambda w: {"_json": {"code": w.listed_code}},
    ),
    Row(
        "POST",
        "/api/tickets/{ticket_id}/resell",
        owner_only(200, 403),  # repricing at the same price
        json={"price": 40},
        ids=lambda w: {"ticket_id": w.listed_ticket},
    ),
    Row(
        "DELETE",
        "/api/tickets/{ticket_id}/resell",
        owner_only(400, 403),  # "Ticket is not listed for resale"
        ids=lambda w: {"ticket_id": w.other_ticket},
    ),
    # ---- resale (§10)
    Row("GET", "/api/resale/marketplace", public(200)),
    Row(
        "GET",
        "/api/resale/my-listings",
        signed_in(200),
        mine=Mine("ticket_id", lambda w: {w.listed_ticket}),
    ),
    Row(
        "POST",
        "/api/resale/purchase",
        customers(400, 409),  # own ticket; the other customer: "Price changed"
        ids=lambda w: {"_json": {"ticket_id": w.listed_ticket, "expected_price": 1}},
    ),
    Row(
        "GET",
        "/api/resale/purchases/{purchase_id}",
        owner_only(200, 404),  # the buyer's alone: "Purchase not found" to anyone else
        ids=lambda w: {"purchase_id": w.purchase_id},
    ),
    # ---- last: logout revokes the token it is given (3.6: always 200)
    Row("POST", "/api/auth/logout", anyone(200), json={}),
)


def _key(method: str, route: str) -> tuple[str, str]:
    return method.upper(), route


ROWS = {_key(r.method, r.route): r for r in MATRIX}


@pytest.fixture(scope="module")
async def world(api: httpx.AsyncClient, system: System) -> World:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    other_customer = await active_customer(api, admin)
    organizer = await verified_organizer(api, admin)
    other_organizer = await verified_organizer(api, admin)
    unverified = await register_organizer(api)
    banned = await active_customer(api, admin)
    response = await api.post(f"/api/auth/ban-user/{banned.user_id}", headers=bearer(admin))
    assert response.status_code == 200, response.text

    event = await event_on_sale(api, admin, organizer, price=40)
    details = await api.get(f"/api/events/{event.event_id}")
    past = datetime.now(UTC) - timedelta(days=10)
    ended = await create_event(api, admin, organizer, start=past, end=past + timedelta(hours=2))
    await approve(api, admin, ended.event_id)
    tickets = await buy(api, customer, event.type_id, 2)
    orders = await api.get("/api/orders", headers=customer.headers)
    listed_id, other_id = tickets[0]["ticket_id"], tickets[1]["ticket_id"]
    response = await api.post(
        f"/api/tickets/{listed_id}/resell", json={"price": 40}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    # A line held in the cart, of a type of its own (the cart-line row adds and removes
    # its own line of the standard type; adding merges lines of one type).
    held = await ticket_type(api, organizer, event.event_id)
    response = await add(api, customer, held["type_id"])
    assert response.status_code == 200, response.text
    cart_item_id = response.json()["cart_item_id"]
    seller = await listed(api, admin, price=30)
    response = await purchase(api, customer, seller.ticket_id)
    assert response.status_code == 200, response.text
    [bought] = await db_rows(
        system, "SELECT purchase_id FROM resale.purchases WHERE ticket_id = :t", t=seller.ticket_id
    )
    return World(
        tokens={
            "anonymous": None,
            "customer": customer.token,
            "other_customer": other_customer.token,
            "organizer": organizer.token,
            "other_organizer": other_organizer.token,
            "unverified_organizer": unverified.token,
            "banned": banned.token,
            "administrator": admin,
        },
        customer=customer,
        event_id=event.event_id,
        type_id=event.type_id,
        location_id=details.json()["location_id"],
        ended_event_id=ended.event_id,
        cart_item_id=cart_item_id,
        order_id=orders.json()[0]["order_id"],
        listed_ticket=listed_id,
        listed_code=await ticket_code(system, listed_id),
        other_ticket=other_id,
        bought_ticket=seller.ticket_id,
        purchase_id=bought.purchase_id,
        banned_user_id=banned.user_id,
        organizer_id=organizer.role_id,
        api=api,
    )


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: f"{r.method} {r.route}")
async def test_access(row: Row, world: World, api: httpx.AsyncClient) -> None:
    ids = row.ids(world)
    if not isinstance(ids, dict):
        ids = await ids
    body = ids.pop("_json", row.json)
    path = row.route.format(**ids)
    got: dict[str, tuple[int, str]] = {}
    shown: dict[str, set[int]] = {}  # of a `mine` row: the ids each caller's 200 lists
    for caller in CALLERS:
        token = world.tokens[caller]
        headers = bearer(token) if token else {}
        kwargs: dict[str, Any] = {"headers": headers, "params": row.query}
        if row.data is not None:
            kwargs["data"] = row.data
        elif body is not None:
            kwargs["json"] = body
        response = await api.request(row.method, path, **kwargs)
        got[caller] = (response.status_code, response.text[:120])
        if row.mine is not None and response.status_code == 200:
            shown[caller] = {item[row.mine.key] for item in response.json()}
    expected = dict(zip(CALLERS, row.expect, strict=True))
    wrong = {c: (expected[c], got[c]) for c in CALLERS if got[c][0] != expected[c]}
    assert not wrong, f"{row.method} {row.route}: caller: (expected, (got, body))\n" + "\n".join(
        f"  {c}: {v}" for c, v in wrong.items()
    )
    if row.mine is not None:
        customers_own = row.mine.ids(world)
        assert customers_own <= shown["customer"], (customers_own, shown["customer"])
        leaked = {c: ids & customers_own for c, ids in shown.items() if c != "customer"}
        assert not any(leaked.values()), f"the customer's {row.mine.key}s shown to: {leaked}"


# ---- every route has its row ---------------------------------------------------------------


def _template(path: str) -> str:
    """`/api/events/{event_id:str}/` → `/api/events/{event_id}`."""
    parts = [p.split(":")[0].rstrip("}") + "}" if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts).rstrip("/") or "/"


def test_every_service_route_has_a_row() -> None:
    routes = set()
    for module in (auth_api, catalog_api, ordering_api, resale_api):
        for handler in module.ROUTES:
            for path in handler.paths:
                if path.startswith("/api"):
                    for method in handler.http_methods:
                        routes.add(_key(method, _template(path)))
    missing = sorted(routes - set(ROWS))
    assert not missing, f"routes without a row in MATRIX: {missing}"
    stale = sorted(k for k in set(ROWS) - routes if k[1].startswith("/api"))
    assert not stale, f"rows for routes that no longer exist: {stale}"


async def test_every_documented_operation_has_a_row(api: httpx.AsyncClient) -> None:
    document = (await api.get("/docs/openapi.json")).json()
    assert "Not available" not in document["info"]["description"]
    documented = {
        _key(method, _template(path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    missing = sorted(documented - set(ROWS))
    assert not missing, f"documented operations without a row in MATRIX: {missing}"
    assert len(documented) >= 50


def test_the_matrix_is_complete() -> None:
    assert len(ROWS) == len(MATRIX), "one row per route"
    for row in MATRIX:
        assert len(row.expect) == len(CALLERS), row
