"""HTTP handlers of ordering (API.md §8, §9.1–9.3): thin, they parse, call the domain, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Annotated, Any, TypeVar

import msgspec
from asyncpg.exceptions import LockNotAvailableError
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from contracts.ordering import InventoryLimit, LimitAnswer
from contracts.timeutil import utcnow
from services.kernel.answers import respond
from services.kernel.app import runtime
from services.kernel.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable
from services.kernel.idempotency import idempotent
from services.kernel.openapi import accepts
from services.kernel.security import authenticated, customer, organizer
from services.kernel.validation import (
    Check,
    Int32,
    PaymentToken,
    not_blank,
    parse_json,
    parse_query,
    path_id,
    shown_id,
)
from services.ordering import cart, checkout, holds, orders, tickets
from services.ordering.config import current, payment_provider
from services.ordering.domain import QUANTITY_TOO_LOW, over_limit

T = TypeVar("T")


class AddItem(msgspec.Struct, frozen=True):
    ticket_type_id: Int32
    quantity: Int32 = 1


class CheckoutBody(msgspec.Struct, frozen=True):
    payment_token: PaymentToken | None = None


class Page(msgspec.Struct, frozen=True):
    page: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 1
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


class TicketQuery(msgspec.Struct, frozen=True):
    ticket_id: Int32 | None = None
    type_id: Int32 | None = None
    is_on_resale: bool | None = None
    status: str | None = None
    owner_id: Int32 | None = None


class CheckIn(msgspec.Struct, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1), Check(not_blank)]


class AvailabilityQuery(msgspec.Struct, frozen=True):
    event_id: Int32
    # The gateway sets it when catalog named a ticket type this answer lacked (API.md §1.8).
    catch_up: bool = False


def rules() -> cart.CartRules:
    settings = current()
    return cart.CartRules(
        hold_for=settings.hold_for, max_per_event=settings.max_tickets_per_customer_per_event
    )


async def fresh_projection(request: Request, attempt: Callable[[], Awaitable[T]]) -> T:
    """A "no" that rests on catalog's projection is only given once it has caught up with
    every catalog write already answered (API.md §1.8). It is asked again only if catalog's
    newest event may have arrived after the first attempt began (a sold-out drop's refusals
    do not each run twice)."""
    started, began = utcnow(), monotonic()
    try:
        return await attempt()
    except (BadRequest, NotFound) as exc:
        if exc.detail in (QUANTITY_TOO_LOW, over_limit(rules().max_per_event).detail):
            raise  # the request's own, and ordering's (R5): no catch-up changes them
        if not await runtime(request).catch_up.changed_since(started, began, "catalog"):
            raise
        return await attempt()


def listing(body: list[dict[str, Any]], total: int) -> Response[Any]:
    return Response(body, headers={"X-Total-Count": str(total)})


# ---- cart and checkout (§8) --------------------------------------------------------------


@get(["/api/cart/items", "/api/cart/items/"])
async def list_cart(request: Request) -> Response[Any]:
    identity = await customer(request)
    rt = runtime(request)
    # The lines show catalog's prices and descriptions: as catalog last answered them (§1.8).
    await rt.catch_up("catalog")
    async with rt.db.unit_of_work() as uow:
        body = await cart.list_items(identity.user_id, uow)
    return listing(body, len(body))


@post(["/api/cart/items", "/api/cart/items/"], status_code=200)
@accepts(body=AddItem, query=AddItem, body_required=False)
async def add_to_cart(request: Request) -> Response[Any]:
    identity = await customer(request)
    db = runtime(request).db

    async def produce() -> Any:
        if "ticket_type_id" in request.query_params or not (await request.body()).strip():
            form = parse_query(request.query_params, AddItem)
        else:
            form = parse_json(await request.body(), AddItem)
        cmd = cart.AddToCart(
            user_id=identity.user_id, type_id=form.ticket_type_id, quantity=form.quantity
        )

        async def attempt() -> Any:
            await cart.refuse_early(cmd, db, rules(), utcnow())
            return await cart.add_item(cmd, db, rules(), utcnow())

        return await fresh_projection(request, attempt)

    return await idempotent(request, db, identity.user_id, produce)


@delete(
    ["/api/cart/items/{cart_item_id:str}", "/api/cart/items/{cart_item_id:str}/"], status_code=200
)
async def remove_from_cart(request: Request, cart_item_id: FromPath[str]) -> bool:
    identity = await customer(request)
    item_id = path_id(cart_item_id, "cart_item_id")
    async with runtime(request).db.unit_of_work() as uow:
        return await cart.remove_item(identity.user_id, item_id, uow, shown=shown_id(cart_item_id))


@post(["/api/cart/checkout", "/api/cart/checkout/"], status_code=200)
@accepts(body=CheckoutBody, body_required=False)
async def checkout_cart(request: Request) -> Response[Any]:
    identity = await customer(request)
    rt = runtime(request)

    async def produce() -> Any:
        body = parse_json(await request.body(), CheckoutBody, empty_ok=True)
        cmd = checkout.Checkout(
            user_id=identity.user_id,
            payment_token=body.payment_token,
            email=identity.sub,
            first_name=identity.name,
        )
        return await checkout.checkout(
            cmd,
            rt.db,
            payment_provider(rt.db),
            rules(),
            utcnow,
            lambda: rt.catch_up.before_refusing("catalog"),
        )

    return await idempotent(request, rt.db, identity.user_id, produce, claim_with_effect=True)


# ---- orders (§8.5, §8.6) -----------------------------------------------------------------


@get(["/api/orders", "/api/orders/"])
@accepts(query=Page)
async def list_orders(request: Request) -> Response[Any]:
    identity = await customer(request)
    page = parse_query(request.query_params, Page)
    async with runtime(request).db.unit_of_work() as uow:
        body, total = await orders.list_orders(identity.user_id, page.page, page.limit, uow)
    return listing(body, total)


@get(["/api/orders/{order_id:str}", "/api/orders/{order_id:str}/"])
async def get_order(request: Request, order_id: FromPath[str]) -> dict[str, Any]:
    identity = await customer(request)
    oid = path_id(order_id, "order_id")
    async with runtime(request).db.unit_of_work() as uow:
        return await orders.get_order(oid, identity.user_id, uow)


# ---- tickets (§9.1–9.3) ------------------------------------------------------------------


@get(["/api/tickets", "/api/tickets/"])
@accepts(query=TicketQuery)
async def list_tickets(request: Request) -> Response[Any]:
    identity = await authenticated(request)
    admin = identity.role == "administrator"
    params: Mapping[str, Any] = request.query_params
    if not admin and "owner_id" in params:  # honoured only for administrators, else ignored
        params = {k: v for k, v in params.items() if k != "owner_id"}
    q = parse_query(params, TicketQuery)
    owner = q.owner_id if admin and q.owner_id is not None else identity.user_id
    f = tickets.TicketFilter(
        owner_id=owner,
        ticket_id=q.ticket_id,
        type_id=q.type_id,
        is_on_resale=q.is_on_resale,
        status=q.status,
    )
    rt = runtime(request)
    # Whether each ticket is on resale, and at what price, is resale's to say: a listing just
    # put up, repriced or withdrawn shows at once (API.md §1.8).
    await rt.catch_up("resale")
    body = await tickets.list_tickets(f, rt.db)
    return listing(body, len(body))


@get(["/api/tickets/{ticket_id:str}/download", "/api/tickets/{ticket_id:str}/download/"])
async def download_ticket(request: Request, ticket_id: FromPath[str]) -> dict[str, str]:
    identity = await authenticated(request)
    tid = path_id(ticket_id, "ticket_id")
    async with runtime(request).db.unit_of_work() as uow:
        return await tickets.ticket_pdf(tid, identity.user_id, identity.name, uow)


@post(["/api/tickets/check-in", "/api/tickets/check-in/"], status_code=200)
@accepts(body=CheckIn)
async def check_in(request: Request) -> dict[str, Any]:
    identity = await organizer(request)
    if not identity.verified:
        raise Forbidden("Organizer not verified")
    body = parse_json(await request.body(), CheckIn)
    rt = runtime(request)
    # Whether the ticket is listed for resale is resale's to say: a listing just put up or
    # withdrawn counts at the door at once (API.md §1.8), both ways; and a listing of an
    # event that just ended (catalog's to say) is not in the way.
    await rt.catch_up("resale", "catalog")
    async with rt.db.unit_of_work() as uow:
        return await tickets.check_in(body.code, identity.role_id, identity.user_id, uow, utcnow())


# ---- internal (gateway composition, internal.md) -----------------------------------------


@get("/internal/availability", include_in_schema=False)
async def availability(request: Request) -> Response[Any]:
    """Live: a remembered answer is dropped by the next change of the inventory rows."""
    q = parse_query(request.query_params, AvailabilityQuery)
    rt = runtime(request)

    async def build() -> tuple[dict[str, int], dict[str, str]]:
        if q.catch_up:
            await rt.catch_up("catalog")
        return await holds.availability(q.event_id, rt.db), {}

    return await respond(request, rt.extras.get("answers"), not q.catch_up, build)


@post("/internal/ticket-types/{type_id:int}/limit", include_in_schema=False, status_code=200)
async def limit_ticket_type(request: Request, type_id: FromPath[int]) -> LimitAnswer:
    """Catalog's, before it commits a lower capacity or a deletion (holds.limit). Bounded:
    catalog gives up after about twice CATCH_UP_TIMEOUT_S, and this answers before (a 503 that
    changed nothing when the type stays unknown here or its row stays busy)."""
    change = parse_json(await request.body(), InventoryLimit)
    rt = runtime(request)
    wait_s = rt.settings.catch_up_timeout_s
    deadline = monotonic() + wait_s
    while True:
        async with rt.db.transaction() as uow:
            await uow.fetchval(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'")
            try:
                answer = await holds.limit(uow, type_id, change)
            except LockNotAvailableError:
                raise ServiceUnavailable("Inventory busy") from None
            if answer is not None:
                if answer.applied:
                    await uow.commit()
                return answer
        # Created a moment ago: its event may not be here yet.
        if monotonic() > deadline or not await rt.catch_up("catalog"):
            raise NotFound("Ticket type not found")


ROUTES = [
    list_cart,
    add_to_cart,
    remove_from_cart,
    checkout_cart,
    list_orders,
    get_order,
    list_tickets,
    download_ticket,
    check_in,
    availability,
    limit_ticket_type,
]
