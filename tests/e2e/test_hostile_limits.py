"""Size limits on hostile requests (issue 9): body, page size, headers, JSON nesting.

- Body > 1 MiB → 413 "Request body too large", at the gateway and at a service, with or
  without a Content-Length (API.md §1.2).
- `limit` > 100 (or < 1), `page` < 1 → 422 on every paged list (§1.5).
- Headers: the gateway answers 431 "Request header fields too large" to more than 100 header
  fields or more than 32 KiB of names and values (GatewayConfig.max_header_count /
  max_header_bytes; GATEWAY_MAX_HEADER_COUNT / GATEWAY_MAX_HEADER_BYTES).
- JSON nested 10,000 deep → 422 at once, never a RecursionError turned 500.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.actors import (
    Account,
    active_customer,
    admin_token,
    new_account_fields,
    verified_organizer,
)
from tests.support.system import System

MIB = 1024 * 1024
TOO_LARGE = {"detail": "Request body too large"}
HEADERS_TOO_LARGE = {"detail": "Request header fields too large"}


class People:
    def __init__(self, admin: str, customer: Account, organizer: Account) -> None:
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.customer = customer.headers
        self.organizer = organizer.headers


@pytest.fixture(scope="module")
async def people(api: httpx.AsyncClient) -> People:
    admin = await admin_token(api)
    return People(admin, await active_customer(api, admin), await verified_organizer(api, admin))


@pytest.fixture
async def auth_service(system: System) -> AsyncIterator[httpx.AsyncClient]:
    """Straight at a service, past the gateway: its own limits hold too."""
    async with httpx.AsyncClient(base_url=system.url("auth"), timeout=30) as client:
        yield client


# ---- body size ---------------------------------------------------------------------------


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


@pytest.mark.parametrize("where", ["gateway", "service"])
async def test_a_body_over_one_mib_is_413(
    where: str, api: httpx.AsyncClient, auth_service: httpx.AsyncClient
) -> None:
    client = api if where == "gateway" else auth_service
    path = "/api/auth/register/customer"
    json = {"content-type": "application/json"}
    # Exactly 1 MiB is read (and refused for what it says, not for its size).
    at_limit = b'{"email": "x"}'.ljust(MIB, b" ")
    response = await client.post(path, content=at_limit, headers=json)
    assert response.status_code == 422, response.text
    over = b'{"email": "x"}'.ljust(MIB + 1, b" ")
    response = await client.post(path, content=over, headers=json)
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    # Streamed without a Content-Length: counted as it arrives.
    response = await client.post(path, content=_chunks(MIB + 1), headers=json)
    assert (response.status_code, response.json()) == (413, TOO_LARGE)


@pytest.mark.parametrize("where", ["gateway", "service"])
async def test_a_body_declared_over_one_mib_is_413_before_it_is_sent(
    where: str, system: System
) -> None:
    """A client that asks first (`Expect: 100-continue`) is told 413 at once, not asked for
    the body and then kept waiting for it."""
    port = system.ports["gateway" if where == "gateway" else "auth"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /api/auth/register/customer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413", status_line


@pytest.mark.parametrize("where", ["gateway", "ordering"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/events HTTP/1.1\r\nHost: x\r\nBad\x7fName: 1\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"POST /api/cart/items HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
    ],
)
async def test_a_request_the_server_cannot_parse_is_a_json_400(
    where: str, request_bytes: bytes, system: System
) -> None:
    """§1.2: every refusal but a 422 has a JSON `detail`, the HTTP server's own included."""
    reader, writer = await asyncio.open_connection("127.0.0.1", system.ports[where])
    try:
        writer.write(request_bytes)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in head.lower(), answer
    assert b"x-request-id: " in head.lower(), answer  # every answer has one (§1.6)
    assert json.loads(body) == {"detail": "Invalid HTTP request received."}


# ---- page size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "who"),
    [
        ("/api/events", None),
        ("/api/resale/marketplace", None),
        ("/api/resale/my-listings", "customer"),
        ("/api/orders", "customer"),
        ("/api/auth/users", "admin"),
    ],
)
async def test_page_size_is_1_to_100(
    path: str, who: str | None, api: httpx.AsyncClient, people: People
) -> None:
    headers = getattr(people, who) if who else {}
    for params, field in (
        ({"limit": 101}, "limit"),
        ({"limit": 1_000_000}, "limit"),
        ({"limit": 0}, "limit"),
        ({"page": 0}, "page"),
    ):
        response = await api.get(path, params=params, headers=headers)
        assert response.status_code == 422, (path, params, response.text)
        assert [e["loc"] for e in response.json()["detail"]] == [["query", field]]
    response = await api.get(path, params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()) <= 100


# ---- headers -----------------------------------------------------------------------------


async def test_an_oversized_header_is_431(api: httpx.AsyncClient) -> None:
    for size in (33 * 1024, MIB):
        response = await api.get("/api/locations", headers={"X-Padding": "a" * size})
        assert (response.status_code, response.json()) == (431, HEADERS_TOO_LARGE)
        assert response.headers["x-request-id"]
    # Within the limit: answered as usual.
    response = await api.get("/api/locations", headers={"X-Padding": "a" * 16 * 1024})
    assert response.status_code == 200, response.text


async def test_too_many_headers_is_431(api: httpx.AsyncClient) -> None:
    many = [(f"X-Header-{i}", "v") for i in range(101)]
    response = await api.get("/api/locations", headers=many)
    assert (response.status_code, response.json()) == (431, HEADERS_TOO_LARGE)
    response = await api.get("/api/locations", headers=[(f"X-H{i}", "v") for i in range(10_000)])
    assert response.status_code == 431
    # httpx adds a handful of its own; 90 more stay under 100.
    response = await api.get("/api/locations", headers=many[:90])
    assert response.status_code == 200, response.text
    assert (await api.get("/health")).status_code == 200


# ---- JSON nesting ------------------------------------------------------------------------


def _nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"{}" + b"}" * depth


@pytest.mark.parametrize("shape", [_nested_arrays, _nested_objects])
async def test_deeply_nested_json_is_a_quick_422(
    shape,
    api: httpx.AsyncClient,
    auth_service: httpx.AsyncClient,
    people: People,  # type: ignore[no-untyped-def]
) -> None:
    body = shape(10_000)
    json = {"content-type": "application/json"}
    targets = [
        (api, "/api/auth/register/customer", {}),  # the gateway reads its email too
        (api, "/api/events", people.organizer),
        (api, "/api/cart/items", people.customer),
        (api, "/api/resale/purchase", people.customer),
        (api, "/api/locations", people.admin),
        (auth_service, "/api/auth/register/customer", {}),
    ]
    for client, path, headers in targets:
        started = time.monotonic()
        response = await client.post(path, content=body, headers={**json, **headers})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"][0]["type"] == "json_invalid"
        assert time.monotonic() - started < 5, path
    # A field nested deep inside an otherwise valid shape is refused like any wrong type.
    deep_field = b'{"ticket_id":' + _nested_arrays(10_000) + b"}"
    response = await api.post(
        "/api/resale/purchase", content=deep_field, headers={**json, **people.customer}
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("body", [b'{"email":"\xff"}', b'"\xff"', b'{"x":"\xed\xa0\x80"}'])
async def test_a_string_that_is_not_utf8_is_a_422_on_every_service(
    body: bytes,
    api: httpx.AsyncClient,
    people: People,
) -> None:
    """msgspec raises UnicodeDecodeError, not its DecodeError, for bytes that are not UTF-8
    inside a string: refused like any malformed JSON, not a 500; logout still answers 200."""
    json = {"content-type": "application/json"}
    targets = [
        ("/api/auth/register/customer", {}),
        ("/api/events", people.organizer),
        ("/api/cart/items", people.customer),
        ("/api/resale/purchase", people.customer),
        ("/api/locations", people.admin),
    ]
    for path, headers in targets:
        response = await api.post(path, content=body, headers={**json, **headers})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"][0]["type"] == "json_invalid", path
    logout = await api.post("/api/auth/logout", content=body, headers=json)
    assert logout.status_code == 200, logout.text


async def test_moderate_nesting_in_an_ignored_key_is_fine(api: httpx.AsyncClient) -> None:
    """Unknown keys are ignored (§1.2), however nested, within the decoder's depth."""
    body = {**new_account_fields(), "extra": [[[[[[[[[[1]]]]]]]]]]}
    response = await api.post("/api/auth/register/customer", json=body)
    assert response.status_code == 201, response.text
