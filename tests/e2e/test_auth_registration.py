"""Registrations (API.md §3.1–3.3), field rules (§2.3), reserved email (§2.6), hashing."""

from __future__ import annotations

import asyncio

import httpx
from argon2 import extract_parameters

from tests.support.actors import (
    ADMIN_EMAIL,
    ADMIN_SECRET_KEY,
    PASSWORD,
    activate_by_email,
    admin_token,
    bearer,
    claims,
    login,
    me,
    new_account_fields,
    register_customer,
    unique,
)
from tests.support.auth_db import auth_sql
from tests.support.system import System

CUSTOMER = "/api/auth/register/customer"
ORGANIZER = "/api/auth/register/organizer"
ADMIN = "/api/auth/register/admin"


def only_error(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    return errors[0]  # type: ignore[no-any-return]


async def test_customer_registers_unverified_without_a_token(api: httpx.AsyncClient) -> None:
    body = new_account_fields()
    response = await api.post(CUSTOMER, json=body)
    assert response.status_code == 201
    assert response.json() == {
        "message": "User registered successfully. Please check your email to activate your account.",
        "user_id": response.json()["user_id"],
    }
    assert isinstance(response.json()["user_id"], int)
    denied = await login(api, body["email"], body["password"])
    assert denied.status_code == 403 and denied.json() == {"detail": "Email not verified"}


async def test_customer_gets_a_verification_link_by_mail(
    api: httpx.AsyncClient, system: System
) -> None:
    account = await register_customer(api)
    [message] = await system.wait_for_mail(account.email)
    body = message.get_payload(decode=True).decode()
    assert "http://127.0.0.1:8080/api/auth/verify-email?token=" in body


async def test_organizer_registers_active_with_an_unverified_token(api: httpx.AsyncClient) -> None:
    body = new_account_fields(company_name="Acme Events")
    response = await api.post(ORGANIZER, json=body)
    assert response.status_code == 201
    assert response.json()["message"] == (
        "Organizer registered successfully, awaiting administrator verification"
    )
    assert set(response.json()) == {"token", "message"}
    token = response.json()["token"]
    assert claims(token)["role"] == "organizer" and "verified" not in claims(token)
    details = await me(api, token)
    assert details["account_state"] == "active" and details["is_active"] is True
    assert details["is_verified"] is False and details["company_name"] == "Acme Events"
    assert details["organizer_id"] == claims(token)["role_id"]


async def test_email_domain_is_lower_cased_and_unique_in_any_case(api: httpx.AsyncClient) -> None:
    tag = unique()
    response = await api.post(CUSTOMER, json=new_account_fields(email=f"{tag}@EXAMPLE.Com"))
    assert response.status_code == 201
    admin = await admin_token(api)
    stored = await api.get(f"/api/auth/users/{response.json()['user_id']}", headers=bearer(admin))
    assert stored.json()["email"] == f"{tag}@example.com"
    again = await api.post(CUSTOMER, json=new_account_fields(email=f"{tag.upper()}@example.COM"))
    assert again.status_code == 400 and again.json() == {"detail": "Email already registered"}


async def test_duplicate_login_is_refused(api: httpx.AsyncClient) -> None:
    first = new_account_fields()
    assert (await api.post(CUSTOMER, json=first)).status_code == 201
    response = await api.post(
        ORGANIZER, json=new_account_fields(login=first["login"], company_name="X")
    )
    assert response.status_code == 400 and response.json() == {"detail": "Login already taken"}


async def test_email_is_checked_before_login(api: httpx.AsyncClient) -> None:
    first = new_account_fields()
    assert (await api.post(CUSTOMER, json=first)).status_code == 201
    response = await api.post(CUSTOMER, json=first)
    assert response.json() == {"detail": "Email already registered"}


async def test_reserved_admin_email_is_refused_on_every_path(api: httpx.AsyncClient) -> None:
    reserved = {"detail": "This email address is reserved and cannot be used for registration"}
    admin = await admin_token(api)
    for email in (ADMIN_EMAIL, ADMIN_EMAIL.upper()):
        for path, extra, headers in (
            (CUSTOMER, {}, {}),
            (ORGANIZER, {"company_name": "C"}, {}),
            (ADMIN, {"admin_secret_key": ADMIN_SECRET_KEY}, bearer(admin)),
        ):
            body = new_account_fields(email=email, **extra)
            response = await api.post(path, json=body, headers=headers)
            assert response.status_code == 400 and response.json() == reserved, (path, email)


async def test_concurrent_duplicate_registrations_exactly_one_wins(api: httpx.AsyncClient) -> None:
    """The same email and login at once: one 201, and the others told of the email first
    (API.md §3.1's order), never of the login, however the race falls."""
    for _ in range(4):
        body = new_account_fields()
        responses = await asyncio.gather(*(api.post(CUSTOMER, json=body) for _ in range(3)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201, 400, 400], [r.text for r in responses]
        for loser in (r for r in responses if r.status_code == 400):
            assert loser.json() == {"detail": "Email already registered"}


async def test_concurrent_duplicate_logins_exactly_one_wins(api: httpx.AsyncClient) -> None:
    login_name = unique()
    bodies = [new_account_fields(login=login_name) for _ in range(2)]
    responses = await asyncio.gather(*(api.post(CUSTOMER, json=b) for b in bodies))
    assert sorted(r.status_code for r in responses) == [201, 400]
    loser = next(r for r in responses if r.status_code == 400)
    assert loser.json() == {"detail": "Login already taken"}


async def test_password_rules_in_order(api: httpx.AsyncClient) -> None:
    cases = [
        ("Ab1", "String should have at least 8 characters", "string_too_short"),
        ("A1" + "a" * 127, "String should have at most 128 characters", "string_too_long"),
        ("Abcdefgh", "Value error, Password must contain at least one digit", "value_error"),
        (
            "abcdefg1",
            "Value error, Password must contain at least one uppercase letter",
            "value_error",
        ),
    ]
    for password, msg, kind in cases:
        error = only_error(await api.post(CUSTOMER, json=new_account_fields(password=password)))
        assert error == {"loc": ["body", "password"], "msg": msg, "type": kind}


async def test_invalid_email_names_the_reason(api: httpx.AsyncClient) -> None:
    error = only_error(await api.post(CUSTOMER, json=new_account_fields(email="no-at-sign")))
    assert error["loc"] == ["body", "email"]
    assert (
        error["msg"] == "value is not a valid email address: An email address must have an @-sign."
    )


async def test_missing_blank_and_long_fields_are_422(api: httpx.AsyncClient) -> None:
    response = await api.post(CUSTOMER, json={"email": "x@example.com"})
    assert response.status_code == 422
    missing = {tuple(e["loc"]) for e in response.json()["detail"] if e["type"] == "missing"}
    assert missing == {("body", f) for f in ("login", "password", "first_name", "last_name")}
    blank = only_error(await api.post(CUSTOMER, json=new_account_fields(first_name="  ")))
    assert blank["loc"] == ["body", "first_name"]
    long = only_error(await api.post(ORGANIZER, json=new_account_fields(company_name="x" * 256)))
    assert long["loc"] == ["body", "company_name"] and long["type"] == "string_too_long"
    malformed = await api.post(
        CUSTOMER, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422


async def test_unknown_keys_are_ignored_never_applied(api: httpx.AsyncClient) -> None:
    body = new_account_fields(user_type="administrator", is_active=True, account_state="active")
    response = await api.post(CUSTOMER, json=body)
    assert response.status_code == 201
    assert (await login(api, body["email"], body["password"])).json() == {
        "detail": "Email not verified"
    }


async def test_admin_registration_needs_an_admin_and_the_secret(api: httpx.AsyncClient) -> None:
    body = new_account_fields(admin_secret_key=ADMIN_SECRET_KEY)
    anonymous = await api.post(ADMIN, json={"not": "valid"})
    assert anonymous.status_code == 401 and anonymous.json() == {"detail": "Not authenticated"}
    assert anonymous.headers["www-authenticate"] == "Bearer"
    admin = await admin_token(api)
    invalid = await api.post(ADMIN, json={"email": "bad"}, headers=bearer(admin))
    assert invalid.status_code == 422
    wrong = await api.post(ADMIN, json={**body, "admin_secret_key": "guess"}, headers=bearer(admin))
    assert wrong.status_code == 403 and wrong.json() == {"detail": "Invalid admin secret key"}
    created = await api.post(ADMIN, json=body, headers=bearer(admin))
    assert created.status_code == 201
    assert created.json()["message"] == "Administrator registered successfully"
    new_admin = claims(created.json()["token"])
    assert new_admin["role"] == "administrator" and new_admin["sub"] == body["email"]
    assert (await login(api, body["email"], PASSWORD)).status_code == 200


async def test_a_customer_cannot_register_an_admin(api: httpx.AsyncClient, system: System) -> None:
    customer = await register_customer(api)
    await activate_by_email(api, system, customer)
    body = new_account_fields(admin_secret_key=ADMIN_SECRET_KEY)
    response = await api.post(ADMIN, json=body, headers=bearer(customer.token))
    assert response.status_code == 403 and response.json() == {"detail": "Not an administrator"}


async def test_stored_password_hash_is_argon2id_with_owasp_parameters(
    api: httpx.AsyncClient, system: System
) -> None:
    account = await register_customer(api)
    [(stored,)] = await auth_sql(
        system, "SELECT password_hash FROM auth.users WHERE user_id = :id", id=account.user_id
    )
    assert stored.startswith("$argon2id$")
    parameters = extract_parameters(stored)
    assert parameters.memory_cost >= 19456
    assert parameters.time_cost >= 2
    assert parameters.parallelism == 1
    assert account.password not in stored
