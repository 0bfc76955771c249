"""HTTP handlers of catalog: thin, they check the caller, parse, call domain, shape the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath

from contracts.ordering import InventoryLimit, LimitAnswer
from services.catalog import domain
from services.catalog.access import organizer_or_administrator, verified_organizer
from services.catalog.listing import all_locations, event_page_of, list_events, list_ticket_types
from services.catalog.schemas import (
    EventChanges,
    EventCreate,
    EventQuery,
    EventUpdate,
    LocationCreate,
    LocationUpdate,
    NewTicketType,
    Notification,
    TicketTypeEventRef,
    TicketTypeQuery,
    TicketTypeUpdate,
    event_doc,
    location_doc,
    ticket_type_doc,
)
from services.kernel.answers import AnswerCache, respond
from services.kernel.app import Runtime, applied_by, runtime
from services.kernel.db import UnitOfWork
from services.kernel.errors import NotFound, RequestValidationError, ServiceUnavailable
from services.kernel.openapi import accepts
from services.kernel.security import administrator, optional_identity
from services.kernel.tokens import Identity
from services.kernel.upstream import UpstreamError
from services.kernel.validation import INT32_MAX, parse_json, parse_query, path_id, shown_id

Doc = dict[str, Any]
log = logging.getLogger("resellio.catalog.api")


# ---- locations (§5) ----------------------------------------------------------------------


def _public(identity: Identity | None) -> bool:
    """Anonymous callers and customers see the same catalog (public events only)."""
    return identity is None or identity.role == "customer"


def _answers(request: Request) -> AnswerCache | None:
    return runtime(request).extras.get("answers")  # type: ignore[no-any-return]


def _counted(items: list[Doc], total: int | None = None) -> tuple[list[Doc], dict[str, str]]:
    return items, {"X-Total-Count": str(len(items) if total is None else total)}


@get("/api/locations")
async def get_locations(request: Request) -> Response[Any]:
    async def build() -> tuple[list[Doc], dict[str, str]]:
        return _counted([location_doc(r) for r in await all_locations(runtime(request).db)])

    return await respond(request, _answers(request), True, build)


@post("/api/locations", status_code=200)
@accepts(body=LocationCreate)
async def post_location(request: Request) -> Doc:
    await administrator(request)
    cmd = parse_json(await request.body(), LocationCreate)
    async with runtime(request).db.unit_of_work() as uow:
        return location_doc(await domain.create_location(cmd, uow))


@put("/api/locations/{location_id:str}")
@accepts(body=LocationUpdate, body_required=False)
async def put_location(request: Request, location_id: FromPath[str]) -> Doc:
    await administrator(request)
    lid = path_id(location_id, "location_id")
    cmd = parse_json(await request.body(), LocationUpdate, empty_ok=True)
    rt = runtime(request)
    async with rt.db.unit_of_work() as uow:
        row = await domain.update_location(lid, cmd, uow, shown=shown_id(location_id))
    await applied_by_sellers(rt, uow)  # a rename is its events' EventUpdated: shown at once
    return location_doc(row)


@delete("/api/locations/{location_id:str}", status_code=200)
async def delete_location(request: Request, location_id: FromPath[str]) -> bool:
    await administrator(request)
    lid = path_id(location_id, "location_id")
    async with runtime(request).db.unit_of_work() as uow:
        await domain.delete_location(lid, uow, shown=shown_id(location_id))
    return True


# ---- events (§6) -------------------------------------------------------------------------


@get("/api/events")
@accepts(query=EventQuery)
async def get_events(request: Request) -> Response[Any]:
    identity = await optional_identity(request)
    query = parse_query(request.query_params, EventQuery)

    async def build() -> tuple[list[Doc], dict[str, str]]:
        rows, total = await list_events(runtime(request).db, query, identity)
        return _counted([event_doc(r) for r in rows], total)

    return await respond(request, _answers(request), _public(identity), build)


@get("/api/events/{event_id:str}")
async def get_event(request: Request, event_id: FromPath[str]) -> Response[Any]:
    """EventDetails + ticket types; the gateway overlays `available` and `resale`."""
    identity = await optional_identity(request)
    eid = path_id(event_id, "event_id")

    async def build() -> tuple[Doc, dict[str, str]]:
        found = await event_page_of(runtime(request).db, eid, identity)
        if found is None:
            raise NotFound("Event not found")
        row, types = found
        doc = {
            **event_doc(row),
            "ticket_types": [{**ticket_type_doc(t), "available": None} for t in types],
            "resale": None,
        }
        return doc, {}

    return await respond(request, _answers(request), _public(identity), build)


@post("/api/events", status_code=200)
@accepts(body=EventCreate)
async def post_event(request: Request) -> Doc:
    identity = await verified_organizer(request)
    cmd = parse_json(await request.body(), EventCreate)
    if cmd.start_date >= cmd.end_date:
        raise domain.END_BEFORE_START
    async with runtime(request).db.unit_of_work() as uow:
        return event_doc(await domain.create_event(cmd, identity.role_id, uow))


@put("/api/events/{event_id:str}")
@accepts(body=EventUpdate, query=EventChanges, body_required=False)
async def put_event(request: Request, event_id: FromPath[str]) -> Doc:
    identity = await verified_organizer(request)
    eid = path_id(event_id, "event_id")
    errors: list[dict[str, Any]] = []
    try:
        from_query = parse_query(request.query_params, EventChanges)
    except RequestValidationError as exc:
        errors += exc.errors
    try:
        cmd = parse_json(await request.body(), EventUpdate, empty_ok=True)
    except RequestValidationError as exc:
        errors += exc.errors
    if errors:
        raise RequestValidationError(errors)
    for name in EventChanges.__struct_fields__:  # the body wins where both are given
        if getattr(cmd, name) is None:
            setattr(cmd, name, getattr(from_query, name))
    rt = runtime(request)
    async with rt.db.unit_of_work() as uow:
        row = await domain.update_event(eid, cmd, identity, uow)
    await applied_by_sellers(rt, uow)
    return event_doc(row)


@delete("/api/events/{event_id:str}", status_code=200)
async def cancel_event(request: Request, event_id: FromPath[str]) -> bool:
    identity = await organizer_or_administrator(request)
    eid = path_id(event_id, "event_id")
    rt = runtime(request)
    async with rt.db.unit_of_work() as uow:
        await domain.cancel_event(eid, identity, uow)
    await applied_by_sellers(rt, uow)
    return True


async def _decide(request: Request, event_id: str, approve: bool) -> bool:
    admin = await administrator(request)
    eid = path_id(event_id, "event_id")
    async with runtime(request).db.unit_of_work() as uow:
        await domain.decide_event(eid, approve, admin, uow)
    return True


@post("/api/events/authorize/{event_id:str}", status_code=200)
async def authorize_event(request: Request, event_id: FromPath[str]) -> bool:
    return await _decide(request, event_id, approve=True)


@post("/api/events/reject/{event_id:str}", status_code=200)
async def reject_event(request: Request, event_id: FromPath[str]) -> bool:
    return await _decide(request, event_id, approve=False)


@post("/api/events/{event_id:str}/notify", status_code=200)
@accepts(body=Notification, body_required=False)
async def notify_participants(request: Request, event_id: FromPath[str]) -> Doc:
    identity = await verified_organizer(request)
    eid = path_id(event_id, "event_id")
    raw = await request.body()
    note = (
        parse_json(raw, Notification)
        if raw.strip()
        else Notification(message="Default notification")
    )
    rt = runtime(request)
    await rt.catch_up("ordering")  # count every ticket issued before this request
    async with rt.db.unit_of_work() as uow:
        return await domain.notify_participants(eid, note, identity, uow)


# ---- ticket types (§7) ---------------------------------------------------------------------


@get("/api/ticket-types")
@accepts(query=TicketTypeQuery)
async def get_ticket_types(request: Request) -> Response[Any]:
    identity = await optional_identity(request)
    query = parse_query(request.query_params, TicketTypeQuery)

    async def build() -> tuple[list[Doc], dict[str, str]]:
        rows = await list_ticket_types(runtime(request).db, query, identity)
        return _counted([ticket_type_doc(r) for r in rows])

    return await respond(request, _answers(request), _public(identity), build)


@post("/api/ticket-types", status_code=200)
@accepts(body=NewTicketType)
async def post_ticket_type(request: Request) -> Doc:
    identity = await verified_organizer(request)
    raw = await request.body()
    event_id = parse_json(raw, TicketTypeEventRef).event_id
    if not 1 <= event_id <= INT32_MAX:
        raise NotFound(f"Event with id {event_id} not found")
    body = msgspec.json.decode(raw)
    async with runtime(request).db.unit_of_work() as uow:
        return ticket_type_doc(await domain.create_ticket_type(event_id, body, identity, uow))


# The services whose sales rest on catalog's events: ordering's checkout (a type's price and
# capacity, the event's dates and status) and resale's purchases (the event's dates and status).
SELLERS = ("ordering", "resale")


async def applied_by_sellers(rt: Runtime, uow: UnitOfWork) -> None:
    """After a change that sales rest on has committed, before it is answered: the services
    that sell have applied its events (bounded), so that a checkout the next moment sells at
    the new price, or not at all for an event just cancelled (API.md §1.8, §7.3), at no cost
    to the purchase path."""
    await applied_by(rt, uow, SELLERS)


class LimitUnconfirmed(ServiceUnavailable):
    """Ordering did not confirm a limit: the change is refused (503), never committed
    unprotected; ordering may still have taken the limit (`announced_again`)."""


@asynccontextmanager
async def limits_given_back(
    rt: Runtime, type_id: int, inventory: OrderingInventory
) -> AsyncIterator[None]:
    """A change that may have limited ordering's inventory (`inventory.limit`) and then did
    not commit (the limit unconfirmed; the database gone before the commit) tells the type
    as committed again, so ordering does not keep a capacity catalog never had."""
    try:
        yield
    except Exception:
        if inventory.maybe_limited:
            await announced_again(rt, type_id)
        raise


# While catalog's database is away, the type is told again this often, for this long.
ANNOUNCE_RETRY_S = 1.0
ANNOUNCE_FOR_S = 600.0


async def announced_again(rt: Runtime, type_id: int) -> None:
    """The type told again as committed: at once, or, if catalog's own database is what
    failed, in the background once it answers again (every second for ten minutes)."""
    if await _announce(rt, type_id):
        return
    task = asyncio.create_task(_announce_until_done(rt, type_id), name=f"announce-{type_id}")
    rt.tasks.append(task)
    task.add_done_callback(rt.tasks.remove)


async def _announce(rt: Runtime, type_id: int) -> bool:
    try:
        async with rt.db.unit_of_work() as uow:
            await domain.announce_ticket_type(type_id, uow)
    except Exception as exc:
        log.warning("ticket type %s not announced again after a limit: %r", type_id, exc)
        return False
    return True


async def _announce_until_done(rt: Runtime, type_id: int) -> None:
    deadline = time.monotonic() + ANNOUNCE_FOR_S
    while time.monotonic() < deadline:
        await asyncio.sleep(ANNOUNCE_RETRY_S)
        if await _announce(rt, type_id):
            log.info("ticket type %s announced again after a limit", type_id)
            return
    log.error("ticket type %s: ordering may keep a capacity catalog never committed", type_id)


class OrderingInventory:
    """domain.Inventory through ordering's internal API."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.maybe_limited = False  # a limit sent that ordering may have applied

    async def limit(self, type_id: int, revision: int, max_count: int) -> int | None:
        target = f"/internal/ticket-types/{type_id}/limit"
        self.maybe_limited = True
        # Ordering may catch up with catalog first (a type it does not know yet), then wait
        # for the row behind a sale.
        timeout = 2 * self.rt.settings.catch_up_timeout_s + 1.0
        try:
            answer: LimitAnswer = await self.rt.catch_up.upstreams.post_json(
                "ordering", target, InventoryLimit(revision, max_count), timeout, LimitAnswer
            )
        except UpstreamError as exc:
            log.warning("ticket type %s not limited in ordering: %s", type_id, exc)
            raise LimitUnconfirmed() from exc
        if answer.stale:  # cannot be while this change holds the type's row: never committed
            log.warning("ticket type %s: ordering has a later revision than %s", type_id, revision)
            raise LimitUnconfirmed()
        self.maybe_limited = answer.applied
        return None if answer.applied else answer.sold


@put("/api/ticket-types/{type_id:str}")
@accepts(body=TicketTypeUpdate, body_required=False)
async def put_ticket_type(request: Request, type_id: FromPath[str]) -> Doc:
    identity = await verified_organizer(request)
    tid = path_id(type_id, "type_id")
    cmd = parse_json(await request.body(), TicketTypeUpdate, empty_ok=True)
    rt = runtime(request)
    if cmd.max_count is not None:
        await rt.catch_up("ordering")  # never below what has been sold, up to this moment
    inventory = OrderingInventory(rt)
    async with limits_given_back(rt, tid, inventory), rt.db.unit_of_work() as uow:
        row = await domain.update_ticket_type(tid, cmd, identity, uow, inventory)
    await applied_by_sellers(rt, uow)
    return ticket_type_doc(row)


@delete("/api/ticket-types/{type_id:str}", status_code=200)
async def delete_ticket_type(request: Request, type_id: FromPath[str]) -> bool:
    identity = await verified_organizer(request)
    tid = path_id(type_id, "type_id")
    shown = shown_id(type_id)
    if shown == "0" or shown.startswith("-"):  # 7.4: ids below 1 are invalid input here
        raise RequestValidationError.single(
            ["path", "type_id"], "Input should be greater than or equal to 1", "greater_than_equal"
        )
    rt = runtime(request)
    await rt.catch_up("ordering")  # any ticket ever issued, up to this moment
    inventory = OrderingInventory(rt)
    async with limits_given_back(rt, tid, inventory), rt.db.unit_of_work() as uow:
        await domain.delete_ticket_type(tid, identity, uow, inventory)
    await applied_by_sellers(rt, uow)  # its cart lines gone: no longer counted by R5
    return True


ROUTES = [
    get_locations,
    post_location,
    put_location,
    delete_location,
    get_events,
    get_event,
    post_event,
    put_event,
    cancel_event,
    authorize_event,
    reject_event,
    notify_participants,
    get_ticket_types,
    post_ticket_type,
    put_ticket_type,
    delete_ticket_type,
]
