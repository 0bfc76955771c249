"""Pure parts of the gateway: the event page overlay, the merged OpenAPI, CORS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from gateway.compose import ResaleSummary, event_page, overlay
from gateway.cors import Cors
from gateway.openapi import merge
from services.kernel.upstream import Upstreams


def catalog_page() -> dict[str, Any]:
    return {
        "event_id": 1,
        "ticket_types": [
            {"type_id": 10, "available": None},
            {"type_id": 11, "available": None},
        ],
        "resale": None,
    }


def test_the_overlay_fills_in_what_ordering_and_resale_said() -> None:
    page = overlay(catalog_page(), {"10": 5, "11": 0}, ResaleSummary(2, 12.5))
    assert [t["available"] for t in page["ticket_types"]] == [5, 0]
    assert page["resale"] == {"listing_count": 2, "lowest_price": 12.5}


def test_a_missing_part_stays_null() -> None:
    page = overlay(catalog_page(), None, None)
    assert [t["available"] for t in page["ticket_types"]] == [None, None]
    assert page["resale"] is None
    partial = overlay(catalog_page(), {"10": 3}, ResaleSummary(0, None))
    assert [t["available"] for t in partial["ticket_types"]] == [3, None]
    assert partial["resale"] == {"listing_count": 0, "lowest_price": None}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_merged_openapi_keeps_every_services_paths_and_separates_clashing_schemas() -> None:
    auth = {
        "paths": {"/api/auth/token": {"post": {"responses": {"200": ref("Message")}}}},
        "components": {"schemas": {"Message": {"type": "object", "title": "auth"}}},
        "tags": [{"name": "auth"}],
    }
    catalog = {
        "paths": {
            "/api/events": {"get": {"responses": {"200": ref("Message")}}},
            "/health": {"get": {}},
        },
        "components": {"schemas": {"Message": {"type": "string"}}},
    }
    merged = merge({"auth": auth, "catalog": catalog, "ordering": None})
    assert set(merged["paths"]) == {"/api/auth/token", "/api/events"}
    schemas = merged["components"]["schemas"]
    assert schemas["Message"] == {"type": "object", "title": "auth"}
    assert schemas["catalog_Message"] == {"type": "string"}
    events_ref = merged["paths"]["/api/events"]["get"]["responses"]["200"]["$ref"]
    assert events_ref == "#/components/schemas/catalog_Message"
    assert "ordering" in merged["info"]["description"]


def test_cors_answers_only_configured_origins_with_credentials() -> None:
    cors = Cors(("https://app.resellio.com",))
    allowed = dict(cors.response_headers(b"https://app.resellio.com"))
    assert allowed[b"access-control-allow-origin"] == b"https://app.resellio.com"
    assert allowed[b"access-control-allow-credentials"] == b"true"
    assert b"X-Total-Count" in allowed[b"access-control-expose-headers"]
    # Not allowed, or no Origin at all: no grant, but the answer still varies by Origin.
    assert cors.response_headers(b"https://evil.example") == [(b"vary", b"Origin")]
    assert cors.response_headers(None) == [(b"vary", b"Origin")]
    assert Cors(()).response_headers(None) == []


def test_a_preflight_from_an_origin_not_allowed_is_granted_nothing() -> None:
    cors = Cors(("https://app.resellio.com",))
    assert cors.preflight_headers(b"https://evil.example", b"authorization") == [
        (b"vary", b"Origin")
    ]
    granted = dict(cors.preflight_headers(b"https://app.resellio.com", b"authorization"))
    assert granted[b"access-control-allow-origin"] == b"https://app.resellio.com"
    assert granted[b"access-control-allow-headers"] == b"authorization"


def test_a_wildcard_origin_never_comes_with_credentials() -> None:
    headers = dict(Cors(("*",)).response_headers(b"https://anyone.example"))
    assert headers[b"access-control-allow-origin"] == b"*"
    assert b"access-control-allow-credentials" not in headers


async def test_the_event_pages_parts_carry_the_requests_id(serve: Callable) -> None:
    """API.md §1.6: the request's id is the correlation id of the logs it causes, in ordering
    and resale as in catalog."""

    def answer(request: bytes) -> bytes:
        if b"/internal/availability" in request:
            body = b'{"10": 4}'
        elif b"/internal/resale-summary" in request:
            body = b'{"listing_count": 1, "lowest_price": 9.5}'
        else:
            body = msgspec.json.encode(catalog_page())
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        return head.encode() + b"\r\n\r\n" + body

    server = await serve(answer)
    url = f"http://127.0.0.1:{server.port}"
    services = ("catalog", "ordering", "resale")
    pool = Upstreams({s: [url] for s in services}, connect_timeout_s=0.5, timeout_s=2.0)
    page = await event_page(pool, b"/api/events/1", "1", [(b"x-request-id", b"rid-7")], None, 2.0)
    pool.close()
    assert msgspec.json.decode(page.body)["ticket_types"][0]["available"] == 4
    assert len(server.requests) == 4  # type 11 unknown to ordering: asked again, caught up
    assert all(b"\r\nx-request-id: rid-7\r\n" in r for r in server.requests), server.requests
