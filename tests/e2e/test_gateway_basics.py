"""The gateway's own answers and its routing to the services."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.actors import admin_token, bearer, unique, verified_organizer
from tests.support.shop import db_rows, event_on_sale
from tests.support.system import System


async def test_root_and_health_are_plain_text(api: httpx.AsyncClient) -> None:
    root = await api.get("/")
    assert root.status_code == 200 and root.text == "API Gateway is up"
    assert root.headers["content-type"].startswith("text/plain")
    health = await api.get("/health")
    assert health.status_code == 200 and health.text == "API Gateway is healthy"


async def test_routes_to_auth_with_and_without_trailing_slash(api: httpx.AsyncClient) -> None:
    for path in ("/api/auth/.well-known/jwks.json", "/api/auth/.well-known/jwks.json/"):
        response = await api.get(path)
        assert response.status_code == 200, path
        keys = response.json()["keys"]
        assert keys and keys[0]["alg"] == "EdDSA" and keys[0]["crv"] == "Ed25519"


async def test_unknown_path_is_a_json_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_request_id_is_kept_when_valid_and_made_when_not(api: httpx.AsyncClient) -> None:
    kept = await api.get("/api/auth/.well-known/jwks.json", headers={"X-Request-ID": "abc-123.x:y"})
    assert kept.headers["x-request-id"] == "abc-123.x:y"
    made = await api.get("/api/auth/.well-known/jwks.json", headers={"X-Request-ID": "bad id!"})
    assert made.headers["x-request-id"] != "bad id!" and len(made.headers["x-request-id"]) == 36


async def test_body_over_one_mebibyte_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/auth/token", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


async def test_unknown_paths_outside_api_are_json_404s_too(api: httpx.AsyncClient) -> None:
    for path in ("/nothing", "/api", "/api/eventsx"):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not Found"}


async def test_wrong_method_is_405_with_allow(api: httpx.AsyncClient) -> None:
    own = await api.post("/health")
    assert own.status_code == 405 and own.json() == {"detail": "Method Not Allowed"}
    assert "GET" in own.headers["allow"]
    proxied = await api.delete("/api/auth/.well-known/jwks.json")
    assert proxied.status_code == 405 and proxied.json() == {"detail": "Method Not Allowed"}
    assert "GET" in proxied.headers["allow"]


async def test_trailing_slash_answers_identically(api: httpx.AsyncClient) -> None:
    plain = await api.get("/api/locations")
    slashed = await api.get("/api/locations/")
    assert plain.status_code == slashed.status_code == 200
    assert plain.json() == slashed.json()
    assert (await api.get("/health/")).text == "API Gateway is healthy"


async def test_leading_slashes_route_as_doubled_ones_do(api: httpx.AsyncClient) -> None:
    plain = await api.get("/api/locations")
    for path in (b"//api/locations", b"/api//locations"):
        # As sent: httpx would read "//api" as a host.
        doubled = await api.get(api.base_url.copy_with(raw_path=path))
        assert (doubled.status_code, doubled.json()) == (200, plain.json()), path


async def test_head_answers_what_get_would_without_its_body(
    api: httpx.AsyncClient, system: System
) -> None:
    """RFC 9110 §9.3.2: the services route GET only; the gateway asks them a GET for a HEAD."""
    admin = await admin_token(api)
    event = await event_on_sale(api, admin, await verified_organizer(api, admin))
    for path in ("/api/events", f"/api/events/{event.event_id}", "/api/resale/marketplace"):
        got = await api.get(path)
        head = await api.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.headers.get("x-total-count") == got.headers.get("x-total-count"), path
    assert (await api.head("/api/nothing-here")).status_code == 404


async def test_an_upgrade_to_a_websocket_is_an_http_request_like_any_other(
    api: httpx.AsyncClient, system: System
) -> None:
    """No route speaks WebSocket: an Upgrade is answered as the plain request it is (the
    server's WebSocket handling answered in plain text, or passed a scope the gateway does not
    serve: a 500)."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for base in (system.gateway_url, system.url("catalog")):
            for headers in (upgrade, {**upgrade, "Sec-WebSocket-Key": ""}):
                answer = await client.get(f"{base}/api/events", headers=headers)
                assert answer.status_code == 200, (base, answer.text)
                assert isinstance(answer.json(), list)


async def test_no_answer_names_the_server(api: httpx.AsyncClient, system: System) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [
            await api.get("/"),
            await api.get("/api/events"),
            await api.get("/api/nothing-here"),
            await client.get(f"{system.url('catalog')}/api/events"),
        ]
    for answer in answers:
        assert "server" not in answer.headers, answer.request.url


async def test_cors_allows_configured_origins_only(api: httpx.AsyncClient) -> None:
    origin = "http://localhost:3000"  # a development default of CORS_ALLOWED_ORIGINS
    preflight = await api.options(
        "/api/user/me",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    actual = await api.get("/api/user/me", headers={"Origin": origin})
    assert actual.status_code == 401  # gateway answers carry CORS headers too
    assert actual.headers["access-control-allow-origin"] == origin
    exposed = actual.headers["access-control-expose-headers"]
    for name in ("X-Total-Count", "X-Request-ID", "Retry-After"):
        assert name in exposed
    stranger = await api.get("/api/locations", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


async def test_merged_openapi_has_every_running_services_paths(
    api: httpx.AsyncClient, system: System
) -> None:
    response = await api.get("/docs/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert "/api/auth/token" in paths
    if "catalog" in system.services:
        assert "/api/events" in paths
    assert not any(p.startswith("/internal") for p in paths)
    page = await api.get("/docs")
    assert page.status_code == 200 and "/docs/openapi.json" in page.text
    assert page.headers["content-type"].startswith("text/html")


async def approved_event(api: httpx.AsyncClient, admin: str) -> int:
    organizer = await verified_organizer(api, admin)
    location = await api.post(
        "/api/locations",
        json={"name": unique("Hall "), "address": "1 Main St", "city": "Oslo", "country": "NO"},
        headers=bearer(admin),
    )
    assert location.status_code == 200, location.text
    event = await api.post(
        "/api/events",
        json={
            "name": unique("Gig "),
            "start_date": "2031-06-01T20:00:00",
            "end_date": "2031-06-01T23:00:00",
            "location_id": location.json()["location_id"],
            "total_tickets": 10,
            "standard_ticket_price": 20,
            "ticket_sales_start": "2020-01-01T00:00:00",
        },
        headers=organizer.headers,
    )
    assert event.status_code == 200, event.text
    event_id = int(event.json()["event_id"])
    approved = await api.post(f"/api/events/authorize/{event_id}", headers=bearer(admin))
    assert approved.status_code == 200, approved.text
    return event_id


async def test_event_page_overlays_live_availability_and_resale(
    api: httpx.AsyncClient, system: System
) -> None:
    if "catalog" not in system.services:
        pytest.skip("catalog is not built yet")
    event_id = await approved_event(api, await admin_token(api))
    async with httpx.AsyncClient(base_url=system.url("catalog")) as catalog:
        bare = (await catalog.get(f"/api/events/{event_id}")).json()
    assert [t["available"] for t in bare["ticket_types"]] == [None] and bare["resale"] is None
    expected_available = 10 if "ordering" in system.services else None
    expected_resale = (
        {"listing_count": 0, "lowest_price": None} if "resale" in system.services else None
    )
    deadline = time.monotonic() + 5
    while True:  # ordering opens the inventory when catalog's approval event reaches it
        page = await api.get(f"/api/events/{event_id}/")
        assert page.status_code == 200, page.text
        body = page.json()
        if body["ticket_types"][0]["available"] == expected_available:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    assert body["resale"] == expected_resale
    # Everything else is catalog's answer as it was.
    assert {k: v for k, v in body.items() if k not in ("ticket_types", "resale")} == {
        k: v for k, v in bare.items() if k not in ("ticket_types", "resale")
    }
    assert [{**t, "available": None} for t in body["ticket_types"]] == bare["ticket_types"]


async def test_event_page_passes_catalogs_errors_through(
    api: httpx.AsyncClient, system: System
) -> None:
    if "catalog" not in system.services:
        pytest.skip("catalog is not built yet")
    missing = await api.get("/api/events/2147483647")
    assert missing.status_code == 404 and missing.json() == {"detail": "Event not found"}
    malformed = await api.get("/api/events/abc")
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "event_id"]


async def test_the_services_internal_endpoints_are_not_reachable_through_the_gateway(
    api: httpx.AsyncClient,
) -> None:
    """`/internal/...` changes state (catalog's limit on ordering's inventory, the catch-up):
    only the services reach it, on their private network; no path through the gateway does."""
    for path in (
        "/internal/ticket-types/1/limit",
        "/api/cart/../internal/ticket-types/1/limit",
        "/api/cart/%2E%2E/internal/ticket-types/1/limit",
        "/api//cart/../../internal/catch-up/catalog",
    ):
        request = api.build_request("POST", path, json={"revision": 1, "max_count": 0})
        request.url = request.url.copy_with(raw_path=path.encode())  # sent as written
        response = await api.send(request)
        assert response.status_code in (401, 404), (path, response.status_code)
        assert "sold" not in response.text and "caught_up" not in response.text, path


async def test_a_request_whose_client_left_before_its_body_ended_is_not_forwarded(
    api: httpx.AsyncClient, system: System
) -> None:
    """§1.2 "a failed request changes nothing": a notification whose body never arrived whole
    was forwarded with what had come (nothing), and mailed "Default notification" to all."""
    admin = await admin_token(api)
    organizer = await verified_organizer(api, admin)
    event = await event_on_sale(api, admin, organizer)
    url = httpx.URL(system.gateway_url)
    _, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST /api/events/{event.event_id}/notify HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Authorization: Bearer {organizer.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 60\r\n\r\n"
    )
    writer.write(head.encode())  # and no body: the client goes before sending it
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    whole = await api.post(
        f"/api/events/{event.event_id}/notify",
        json={"message": "Doors open at eight"},
        headers=organizer.headers,
    )
    assert whole.status_code == 200, whole.text
    sent = await db_rows(
        system,
        "SELECT payload->>'message' FROM catalog.outbox"
        " WHERE type = 'catalog.ParticipantsNotified' AND (payload->>'event_id')::int = :e",
        e=event.event_id,
    )
    assert [row[0] for row in sent] == ["Doors open at eight"]
