"""The gateway's own answers and its routing to the services."""

from __future__ import annotations

import httpx


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
