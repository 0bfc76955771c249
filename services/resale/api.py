"""HTTP handlers of resale (API.md §9.4, §9.5, §10; internal.md): parse, call the rules,
answer. Checks against projections catch up with their producers before saying no (§1.8)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from contracts.codec import encode
from services.kernel.answers import respond
from services.kernel.app import runtime
from services.kernel.db import Database
from services.kernel.errors import BadRequest, DomainError, Forbidden, NotFound
from services.kernel.idempotency import (
    STORED_STATUSES,
    IdempotencyKeys,
    fingerprint,
    header_key,
)
from services.kernel.openapi import accepts
from services.kernel.security import authenticated, customer, optional_identity
from services.kernel.validation import parse_json, parse_query, path_id
from services.resale import marketplace, purchase
from services.resale.config import current, payment_provider
from services.resale.listings import (
    ACCOUNT_BANNED,
    NOT_LISTED,
    TICKET_NOT_FOUND,
    ListTicket,
    list_or_reprice,
    withdraw,
)
from services.resale.models import purchases
from services.resale.schemas import (
    Doc,
    ListingPrice,
    MarketQuery,
    MyListingsQuery,
    PurchaseRequest,
    SummaryQuery,
    listing_doc,
    ticket_doc,
)
from services.resale.tickets import ticket_row

T = TypeVar("T")
# Answers that rest on the request or resale's own listings, not on another service's events:
# no point catching up before giving them.
INPUT_ERRORS = frozenset(
    {"Resell price required", "Resale price must be greater than 0", NOT_LISTED}
)
PROJECTED_BY = ("ordering", "catalog")
# What a listing on sale rests on besides resale's own rows: the event (catalog) and the
# seller not banned (auth: a ban withdraws the seller's listings at once everywhere, §3.15).
ON_SALE_BY = ("catalog", "auth")
PROCESSING = ResponseSpec(data_container=dict[str, Any], description="Purchase is being processed")


async def after_catch_up(
    request: Request, attempt: Callable[[], Awaitable[T]], first: tuple[str, ...] = ()
) -> T:
    """Run `attempt`; a projection-based no (404/403/400) is re-checked once caught up.
    `first`: the producers a yes also rests on, caught up with before the first attempt too
    (catalog: an organizer may just have moved or cancelled the event; ordering: the door may
    just have checked the ticket in)."""
    if first:
        await runtime(request).catch_up(*first)
    try:
        return await attempt()
    except (NotFound, Forbidden, BadRequest) as exc:
        if exc.detail in INPUT_ERRORS:
            raise
        # A ban as resale last heard of it: the user may have been unbanned a moment ago.
        banned = ("auth",) if exc.detail == ACCOUNT_BANNED else ()
        await runtime(request).catch_up.before_refusing(*PROJECTED_BY, *banned)
        return await attempt()


async def ticket_details(db: Database, ticket_id: int) -> Doc:
    async with db.engine.connect() as conn:
        row = await ticket_row(conn, ticket_id)
    if row is None:
        raise NotFound(TICKET_NOT_FOUND)
    return ticket_doc(row)


def _listed(items: list[Doc], total: int) -> Response[list[Doc]]:
    return Response(items, headers={"X-Total-Count": str(total)})


# ---- listings (§9.4, §9.5) -----------------------------------------------------------------


def _price_body(raw: bytes) -> ListingPrice:
    """No body, or a JSON null, is a missing price (400 later), not a malformed request."""
    if raw.strip() in (b"", b"null"):
        return ListingPrice()
    return parse_json(raw, ListingPrice)


@post("/api/tickets/{ticket_id:str}/resell", status_code=200)
@accepts(body=ListingPrice, body_required=False)
async def resell(request: Request, ticket_id: FromPath[str]) -> Doc:
    identity = await authenticated(request)
    tid = path_id(ticket_id, "ticket_id")
    body = _price_body(await request.body())
    db = runtime(request).db
    cmd = ListTicket(tid, identity.user_id, body.price)

    async def attempt() -> Any:
        return await list_or_reprice(cmd, db, current().price_cap_percent)

    # As this request left it, not as a concurrent one did.
    return ticket_doc(await after_catch_up(request, attempt, first=PROJECTED_BY))


@delete("/api/tickets/{ticket_id:str}/resell", status_code=200)
async def withdraw_listing(request: Request, ticket_id: FromPath[str]) -> Doc:
    identity = await authenticated(request)
    tid = path_id(ticket_id, "ticket_id")
    db = runtime(request).db

    async def attempt() -> Any:
        async with db.unit_of_work() as uow:
            return await withdraw(tid, identity.user_id, uow)

    # The event may just have ended or been cancelled: then there is no listing to withdraw.
    return ticket_doc(await after_catch_up(request, attempt, first=("catalog",)))


# ---- marketplace (§10.1, §10.2) --------------------------------------------------------------


@get("/api/resale/marketplace")
@accepts(query=MarketQuery)
async def get_marketplace(request: Request) -> Response[list[Doc]]:
    identity = await optional_identity(request)
    q = parse_query(request.query_params, MarketQuery)
    caller_id = identity.user_id if identity else None
    where = marketplace.market_conditions(q, caller_id)  # a bad sort or date: 400 at once
    rt = runtime(request)
    # What is shown depends on the events' dates and status: an event just moved into the
    # past or cancelled no longer shows its listings (API.md §1.8). So the catch-up comes
    # first on every request, and only then the answer, from memory while nothing under it
    # (listings, events, ticket types) changed and no listing counted has ended; the
    # caller's own listings are left out, so a caller's answer is remembered for them alone.
    # Not with auth: a seller just banned may show for the moment resale takes to apply the
    # ban (a purchase of theirs waits for it), where asking auth too cost a third of the
    # marketplace's answers (`bench/ROUNDS.md`, Round 20).
    await rt.catch_up("catalog")
    holds_for = math.inf

    async def build() -> tuple[list[Doc], dict[str, str]]:
        nonlocal holds_for
        found = await marketplace.page_of(rt.db, where, q.sort_by, q.sort_order, q.page, q.limit)
        holds_for = found.holds_for_s
        return [listing_doc(r) for r in found.rows], {"X-Total-Count": str(found.total)}

    return await respond(
        request,
        rt.extras.get("answers"),
        True,
        build,
        lambda: holds_for,
        variant="" if caller_id is None else str(caller_id),
        before_routing=False,
    )


@get("/api/resale/my-listings")
@accepts(query=MyListingsQuery)
async def get_my_listings(request: Request) -> Response[list[Doc]]:
    identity = await authenticated(request)
    q = parse_query(request.query_params, MyListingsQuery)
    where = marketplace.my_conditions(q, identity.user_id)
    rt = runtime(request)
    await rt.catch_up("catalog")  # an event just ended or cancelled shows no active listing
    db = rt.db
    found = await marketplace.page_of(db, where, q.sort_by, q.sort_order, q.page, q.limit)
    return _listed([listing_doc(r) for r in found.rows], found.total)


@get("/internal/resale-summary", include_in_schema=False)
async def resale_summary(request: Request) -> Response[Any]:
    """Asked for every event page: remembered until the next change of the listings (the
    caller's id, if any, is part of the question), or until a listing counted stops being
    shown because its event ended."""
    q = parse_query(request.query_params, SummaryQuery)
    rt = runtime(request)
    holds_for = math.inf

    async def build() -> tuple[Doc, dict[str, str]]:
        nonlocal holds_for
        found = await marketplace.summary(rt.db, q.event_id, q.exclude_user_id)
        holds_for = found.holds_for_s
        return found.doc, {}

    return await respond(request, rt.extras.get("answers"), True, build, lambda: holds_for)


# ---- purchase (§10.3) -------------------------------------------------------------------------


async def _buy(
    request: Request, cmd: purchase.BuyTicket, following: bool = False
) -> tuple[int, Any]:
    """(200, TicketDetails) once the buyer holds the ticket, else (202, how to follow it).
    `following`: the key's answer so far was a 202."""
    rt = runtime(request)
    bought = await purchase.earlier_purchase(rt.db, cmd, following)
    if bought is None:

        async def attempt() -> Any:
            async with rt.db.unit_of_work() as uow:
                return await purchase.claim(cmd, uow)

        bought = await after_catch_up(request, attempt, first=ON_SALE_BY)
        payments = payment_provider(rt.db)
        payment_id = await purchase.charge(bought, cmd.payment_token, rt.db, payments)
        await purchase.charged(rt.db, bought, payment_id, current().fee_percent, payments)
    status = await purchase.settle_answer(rt.db, bought, current().transfer_wait_s)
    if status == "completed":
        return 200, await ticket_details(rt.db, bought.ticket_id)
    return 202, {"detail": "Purchase is being processed", "purchase_id": bought.purchase_id}


_KEPT = STORED_STATUSES | {202}


@post("/api/resale/purchase", status_code=200, responses={202: PROCESSING})
@accepts(body=PurchaseRequest)
async def buy_ticket(request: Request) -> Response[Any]:
    identity = await customer(request)
    body = parse_json(await request.body(), PurchaseRequest)
    key = header_key(request)
    cmd = purchase.BuyTicket(
        body.ticket_id,
        identity.user_id,
        body.expected_price,
        body.payment_token,
        key,
    )
    if key is None:
        status, answer = await _buy(request, cmd)
        return Response(answer, status_code=status)
    # Idempotency-Key (§1.6): the kernel's store. A 202 is kept (another request under the
    # key is refused with 409) but not replayed: a repeat of the same request follows the
    # purchase it started (found by the key) to its final answer, which replaces it.
    keys = IdempotencyKeys(runtime(request).db)
    scope = (identity.user_id, request.method, request.url.path.rstrip("/"), key)
    stored = await keys.claim(*scope, await fingerprint(request))
    if stored is not None and stored[0] != 202:
        return Response(stored[1], status_code=stored[0], media_type="application/json")
    try:
        status, answer = await _buy(request, cmd, following=stored is not None)
    except DomainError as exc:
        if stored is None or exc.status_code in _KEPT:
            await keys.finish(*scope, exc.status_code, encode({"detail": exc.detail}), _KEPT)
        else:
            # A follower's 503: the 202 it followed gives way, so a repeat is a new attempt;
            # only that very answer (a claim or a 202 stored since is left alone).
            await keys.free_answered(*scope, stored)
        raise
    except BaseException:
        if stored is None:  # a followed purchase keeps its 202 until it has an answer
            await keys.finish(*scope, 500, b"")
        raise
    await keys.finish(*scope, status, encode(answer), _KEPT)
    return Response(answer, status_code=status)


@get("/api/resale/purchases/{purchase_id:str}")
async def get_purchase(request: Request, purchase_id: FromPath[str]) -> Doc:
    identity = await authenticated(request)
    pid = path_id(purchase_id, "purchase_id")
    async with runtime(request).db.engine.connect() as conn:
        row = (
            await conn.execute(
                purchases.select().where(
                    purchases.c.purchase_id == pid, purchases.c.buyer_id == identity.user_id
                )
            )
        ).first()
    if row is None:
        raise NotFound("Purchase not found")
    status = row.status if row.status in ("completed", "failed") else "processing"
    return {"purchase_id": row.purchase_id, "ticket_id": row.ticket_id, "status": status}


ROUTES = [
    resell,
    withdraw_listing,
    get_marketplace,
    get_my_listings,
    resale_summary,
    buy_ticket,
    get_purchase,
]
