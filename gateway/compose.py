"""The composed event page, `GET /api/events/{event_id}` (API.md §6.2, internal.md).

Catalog answers the event with `available: null` per ticket type and `resale: null`; ordering's
live availability and resale's summary are asked for at the same time, each with a short
timeout, and overlaid when they answer. A part that is late, down or not built yet stays null:
the page never waits on, or fails because of, anything but catalog.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from services.kernel.upstream import Answer, UpstreamError, Upstreams
from services.kernel.validation import id_in_path


class ResaleSummary(msgspec.Struct):
    listing_count: int
    lowest_price: float | None = None


def overlay(
    page: dict[str, Any],
    availability: dict[str, int] | None,
    resale: ResaleSummary | None,
) -> dict[str, Any]:
    """Fill in what ordering and resale said; what they did not say stays null."""
    for ticket_type in page.get("ticket_types") or ():
        if isinstance(ticket_type, dict):
            known = availability.get(str(ticket_type.get("type_id"))) if availability else None
            ticket_type["available"] = known
    page["resale"] = msgspec.to_builtins(resale) if resale is not None else None
    return page


def _missing_types(page: dict[str, Any], availability: dict[str, int]) -> bool:
    types = page.get("ticket_types")
    return isinstance(types, list) and any(
        isinstance(t, dict) and str(t.get("type_id")) not in availability for t in types
    )


async def _part(
    upstreams: Upstreams,
    service: str,
    target: str,
    timeout: float,
    type_: Any,
    headers: list[tuple[bytes, bytes]],
) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await upstreams.get_json(service, target, timeout, type_, headers)
    except (UpstreamError, TimeoutError):
        return None


async def event_page(
    upstreams: Upstreams,
    target: bytes,
    event_id: str,
    headers: list[tuple[bytes, bytes]],
    caller_user_id: int | None,
    part_timeout_s: float,
) -> Answer:
    """Catalog's answer with the live parts overlaid; catalog's non-200 answers unchanged.
    Raises UpstreamError when catalog itself cannot answer."""
    parts: list[asyncio.Task[Any]] = []
    # The parts are the same request's: their logs and events carry its id (API.md §1.6).
    request_id = [(name, value) for name, value in headers if name == b"x-request-id"]
    if the_id := id_in_path(event_id):
        resale_target = f"/internal/resale-summary?event_id={the_id}"
        if caller_user_id is not None:
            resale_target += f"&exclude_user_id={caller_user_id}"
        parts = [
            asyncio.create_task(
                _part(
                    upstreams,
                    "ordering",
                    f"/internal/availability?event_id={the_id}",
                    part_timeout_s,
                    dict[str, int],
                    request_id,
                )
            ),
            asyncio.create_task(
                _part(upstreams, "resale", resale_target, part_timeout_s, ResaleSummary, request_id)
            ),
        ]
    try:
        answer = await upstreams.send("catalog", "GET", target, headers)
    except BaseException:
        for task in parts:
            task.cancel()
        raise
    if answer.status != 200 or not parts:
        for task in parts:
            task.cancel()
        return answer
    try:
        page = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        page = None
    availability, resale = await asyncio.gather(*parts)
    if not isinstance(page, dict):
        return answer
    if availability is not None and _missing_types(page, availability):
        # Ordering has not yet seen a ticket type catalog just answered with (API.md §1.8):
        # ask again, letting ordering catch up with catalog first. Only the stale path pays.
        availability = await _part(
            upstreams,
            "ordering",
            f"/internal/availability?event_id={the_id}&catch_up=true",
            part_timeout_s,
            dict[str, int],
            request_id,
        )
    body = msgspec.json.encode(overlay(page, availability, resale))
    return Answer(200, answer.headers, body)
