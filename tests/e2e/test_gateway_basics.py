"""The gateway's own answers and its routing to the services."""

from __future__ import annotations

import httpx

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
