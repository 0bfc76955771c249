"""Rate limits at the edge (API.md §1.7), in a system of their own with small limits.

Loopback is trusted as a proxy here, so each test speaks for a client address of its own
through `X-Forwarded-For` and the tests never share a counter.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.actors import (
    PASSWORD,
    active_customer,
    admin_token,
    login,
    new_account_fields,
    register_organizer,
    unique,
)
from tests.support.system import System

TOO_MANY = {"detail": "Too many requests. Try again later."}
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def limited() -> Iterator[System]:
    system = System(
        extra_env={
            "RATE_LIMIT_EXEMPT_NETWORKS": "10.99.0.0/16",
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "RATE_LIMIT_LOGIN_IP": "5/1m",
            "RATE_LIMIT_LOGIN_FAILURES_ACCOUNT": "3/15m",
            "RATE_LIMIT_REGISTER_IP": "3/1h",
            "RATE_LIMIT_REGISTER_ACCOUNT": "2/1h",
            "RATE_LIMIT_RECOVERY_IP": "off",
            "RATE_LIMIT_REFRESH_IP": "3/1m",
            "RATE_LIMIT_CHANGE_PASSWORD_FAILURES_ACCOUNT": "2/15m",
        }
    )
    try:
        system.start()
        yield system
    finally:
        system.stop()


@pytest.fixture
async def client(limited: System) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an address of its own."""
    async with httpx.AsyncClient(
        base_url=limited.gateway_url, timeout=30, headers={"X-Forwarded-For": next(_addresses)}
    ) as http:
        yield http


def assert_limited(response: httpx.Response, period_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == TOO_MANY
    assert 1 <= int(response.headers["retry-after"]) <= period_s


async def test_logins_per_address_then_429_before_any_other_check(
    client: httpx.AsyncClient, limited: System
) -> None:
    for _ in range(5):
        response = await login(client, f"{unique()}@example.com", "Wrong123!")
        assert response.status_code == 401, response.text
    assert_limited(await login(client, f"{unique()}@example.com", "Wrong123!"), 60)
    # Over the limit even a malformed request gets the 429, not its 422.
    assert_limited(await client.post("/api/auth/token", json={"nonsense": True}), 60)
    async with httpx.AsyncClient(
        base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
    ) as elsewhere:
        response = await login(elsewhere, f"{unique()}@example.com", "Wrong123!")
        assert response.status_code == 401


async def test_failed_logins_lock_the_account_whatever_the_address(limited: System) -> None:
    async def from_new_address() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
        )

    async with await from_new_address() as setup:
        customer = await active_customer(setup, await admin_token(setup))
    for _ in range(3):
        async with await from_new_address() as attacker:
            response = await login(attacker, customer.email.upper(), "Wrong123!")
            assert response.status_code == 401
    async with await from_new_address() as owner:
        # Locked even with the right password: that is what stops the guessing.
        assert_limited(await login(owner, customer.email, PASSWORD), 900)
        other = await login(owner, f"{unique()}@example.com", "Wrong123!")
        assert other.status_code == 401


async def test_failed_logins_count_against_the_account_auth_reads(limited: System) -> None:
    """The gateway names the account of a login as auth reads the form: the first `username`
    (a decoy repeated after it does not take the count). Auth takes no other kind of body."""

    async def from_new_address() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
        )

    async with await from_new_address() as setup:
        customer = await active_customer(setup, await admin_token(setup))
    form = {"content-type": "application/x-www-form-urlencoded"}
    for n in range(3):
        async with await from_new_address() as attacker:
            fields = [
                ("username", customer.email),
                ("password", "Wrong123!"),
                ("username", f"decoy-{n}-{unique()}@example.com"),
            ]
            response = await attacker.post(
                "/api/auth/token", content=urlencode(fields), headers=form
            )
            assert response.status_code == 401, response.text
    async with await from_new_address() as owner:
        assert_limited(await login(owner, customer.email, PASSWORD), 900)


async def test_a_login_to_a_lookalike_account_does_not_clear_the_failures(
    limited: System,
) -> None:
    """The count's key folds "ß" as "ss", where auth keeps "jeßica@" and "jessica@" apart: a
    success on one's own "jeßica@" forgets that login's own attempt only, so guesses at
    "jessica@" between such logins still lock it."""

    async def from_new_address() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
        )

    tag = unique("jessica")
    async with await from_new_address() as setup:
        victim = await active_customer(setup, await admin_token(setup), email=f"{tag}@example.com")
    async with await from_new_address() as setup:
        own = await register_organizer(setup, email=tag.replace("ss", "\u00df") + "@example.com")
    for guess in range(2):
        async with await from_new_address() as attacker:
            response = await login(attacker, victim.email, f"Wrong{guess}23!")
            assert response.status_code == 401, response.text
            mine = await login(attacker, own.email, PASSWORD)  # pending, but the password's right
            assert mine.status_code == 200, mine.text
    async with await from_new_address() as attacker:
        assert (await login(attacker, victim.email, "Wrong923!")).status_code == 401
    async with await from_new_address() as owner:
        assert_limited(await login(owner, victim.email, PASSWORD), 900)


async def test_registration_limits_count_the_email_as_auth_reads_it(limited: System) -> None:
    """Spellings of one address that auth takes for the same account (its domain in another
    case, or in full-width or ideographic characters, which it normalises) share one count."""
    body = new_account_fields()
    local, domain = body["email"].split("@")
    ideographic = domain.replace(".", "\u3002")
    spellings = [body["email"], f"{local}@{domain.upper()}", f"{local}@{ideographic}"]
    statuses = []
    for email in spellings:
        async with httpx.AsyncClient(
            base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
        ) as somewhere:
            response = await somewhere.post(
                "/api/auth/register/customer", json={**body, "email": email}
            )
            statuses.append(response)
    assert [r.status_code for r in statuses[:2]] == [201, 400]
    assert_limited(statuses[2], 3600)


async def test_registrations_per_address(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await client.post("/api/auth/register/customer", json=new_account_fields())
        assert response.status_code == 201, response.text
    response = await client.post("/api/auth/register/organizer", json=new_account_fields())
    assert_limited(response, 3600)


async def test_registrations_per_email_whatever_the_address(limited: System) -> None:
    body = new_account_fields()
    statuses = []
    for _ in range(3):
        async with httpx.AsyncClient(
            base_url=limited.gateway_url, headers={"X-Forwarded-For": next(_addresses)}
        ) as somewhere:
            statuses.append(await somewhere.post("/api/auth/register/customer", json=body))
    assert [r.status_code for r in statuses[:2]] == [201, 400]
    assert_limited(statuses[2], 3600)


async def test_refresh_per_address(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        response = await client.post("/api/auth/refresh", json={"refresh_token": "nope"})
        assert response.status_code == 401, response.text
    assert_limited(await client.post("/api/auth/refresh", json={"refresh_token": "nope"}), 60)


async def test_a_path_spelt_otherwise_is_limited_as_itself(client: httpx.AsyncClient) -> None:
    """The services read "//" as "/", and "%2F" as a slash: so does every limit. (Each of
    these reached auth's login unlimited.)"""

    def form() -> dict[str, str]:  # a new account each time: only the address's limit counts
        return {"username": f"{unique()}@example.com", "password": "Wrong123!"}

    for path in ("/api/auth//token", "/api//auth/token/", "/api/auth/%2Ftoken", "/api/auth/token"):
        response = await client.post(path, data=form())
        assert response.status_code == 401, (path, response.text)
    response = await client.post("/api/auth///token", data=form())
    assert response.status_code == 401, response.text
    assert_limited(await client.post("/api/auth//token", data=form()), 60)


async def test_failed_password_changes_per_account(client: httpx.AsyncClient) -> None:
    customer = await active_customer(client, await admin_token(client))
    wrong = {"current_password": "Wrong123!", "new_password": "Another123!"}
    for _ in range(2):
        response = await client.post(
            "/api/user/change-password", json=wrong, headers=customer.headers
        )
        assert response.status_code == 400, response.text
    right = {"current_password": PASSWORD, "new_password": "Another123!"}
    limited = await client.post("/api/user/change-password", json=right, headers=customer.headers)
    assert_limited(limited, 900)
    # The token check comes first ([U] before the endpoint's own errors).
    anonymous = await client.post("/api/user/change-password", json=right)
    assert anonymous.status_code == 401


async def test_exempt_networks_are_not_limited(limited: System) -> None:
    async with httpx.AsyncClient(
        base_url=limited.gateway_url, headers={"X-Forwarded-For": "10.99.3.4"}
    ) as trusted:
        for _ in range(8):
            response = await login(trusted, f"{unique()}@example.com", "Wrong123!")
            assert response.status_code == 401


def test_a_forwarded_address_is_not_believed_from_an_untrusted_peer() -> None:
    """API.md §1.7: X-Forwarded-For only from TRUSTED_PROXIES (none here). The HTTP server
    under the gateway believed it from any loopback peer, so a client on this host (or behind
    a same-host TCP proxy) could name an exempt network's address and never be limited."""
    system = System(
        extra_env={
            "RATE_LIMIT_EXEMPT_NETWORKS": "10.99.0.0/16",
            "TRUSTED_PROXIES": "",
            "RATE_LIMIT_LOGIN_IP": "3/1m",
        }
    )
    try:
        system.start()
        with httpx.Client(base_url=system.gateway_url, timeout=30) as client:
            answers = [
                client.post(
                    "/api/auth/token",
                    data={"username": f"{unique()}@example.com", "password": "Wrong123!"},
                    headers={"X-Forwarded-For": "10.99.0.7"},
                ).status_code
                for _ in range(4)
            ]
        assert answers == [401, 401, 401, 429]
    finally:
        system.stop()
