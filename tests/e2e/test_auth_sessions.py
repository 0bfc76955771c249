"""Login (API.md §3.4), access-token claims (§2.4), refresh rotation (§3.5), logout (§3.6),
JWKS (§3.7)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from urllib.parse import urlencode

import httpx
import jwt

from tests.support.actors import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    activate_by_admin,
    active_customer,
    admin_token,
    bearer,
    claims,
    login,
    new_account_fields,
    register_customer,
    register_organizer,
    sign_in,
    verified_organizer,
)
from tests.support.auth_db import expire_refresh_tokens
from tests.support.shop import holding, waiting_for_lock
from tests.support.system import System

REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"
INCORRECT = {"detail": "Incorrect email or password"}


async def test_login_answers_an_access_and_a_refresh_token(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    response = await login(api, customer.email, customer.password)
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Login successful" and set(body) == {
        "token",
        "refresh_token",
        "message",
    }
    assert body["refresh_token"].count(".") == 0 and len(body["refresh_token"]) >= 43


async def test_access_token_header_and_claims(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    header = jwt.get_unverified_header(customer.token)
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT" and header["kid"]
    jwks = (await api.get("/api/auth/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    token = claims(customer.token)
    assert token["sub"] == customer.email and token["role"] == "customer"
    assert token["user_id"] == customer.user_id and token["name"] == customer.first_name
    assert token["iss"] == "resellio-auth" and token["aud"] == "resellio-api"
    assert isinstance(token["iat"], float) and round(token["iat"], 3) == token["iat"]
    assert token["exp"] - int(token["iat"]) == 30 * 60
    assert uuid.UUID(token["jti"]).version == 4
    assert "verified" not in token


async def test_login_email_ignores_case(api: httpx.AsyncClient) -> None:
    response = await login(api, ADMIN_EMAIL.upper(), ADMIN_PASSWORD)
    assert response.status_code == 200 and claims(response.json()["token"])["role"] == (
        "administrator"
    )


async def test_an_address_beyond_ascii_signs_in_as_registered(api: httpx.AsyncClient) -> None:
    """§2.3: every comparison ignores case, by one set of rules (PostgreSQL's, as the unique
    index does): Python lowers a final sigma to "ς" where PostgreSQL gives "σ" (or, in the C
    locale, keeps "Σ"), and such an account could neither sign in nor be found again."""
    account = await register_customer(api, email=f"{uuid.uuid4().hex}xΣ@example.com")
    await activate_by_admin(api, await admin_token(api), account)
    signed_in = await login(api, account.email, account.password)
    assert signed_in.status_code == 200, signed_in.text
    again = await api.post(
        "/api/auth/register/customer", json=new_account_fields(email=account.email)
    )
    assert (again.status_code, again.json()) == (400, {"detail": "Email already registered"})
    # The domain is stored normalised (IDNA, lower case); a login that spells it as it was
    # registered (its ASCII form) or otherwise (an ideographic full stop) is read the same way.
    idn = await register_customer(api, email=f"{uuid.uuid4().hex}@xn--mnchen-3ya.de")
    await activate_by_admin(api, await admin_token(api), idn)
    local = idn.email.split("@")[0]
    for domain in (
        "xn--mnchen-3ya.de",
        "XN--MNCHEN-3YA.DE",
        "m\u00fcnchen.de",
        "m\u00fcnchen\u3002de",
    ):
        signed_in = await login(api, f"{local}@{domain}", idn.password)
        assert signed_in.status_code == 200, (domain, signed_in.text)


async def test_wrong_password_and_unknown_email_look_the_same(api: httpx.AsyncClient) -> None:
    wrong = await login(api, ADMIN_EMAIL, "WrongPassword1")
    unknown = await login(api, f"nobody-{uuid.uuid4().hex}@example.com", "WrongPassword1")
    for response in (wrong, unknown):
        assert response.status_code == 401 and response.json() == INCORRECT
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_wrong_password_is_refused_before_the_account_state_is_told(
    api: httpx.AsyncClient,
) -> None:
    """§3.4: the password is checked before the account state, so only whoever knows the
    password learns that an account is unverified, banned or rejected."""
    admin = await admin_token(api)
    unverified = await register_customer(api)
    banned = await active_customer(api, admin)
    ban = await api.post(f"/api/auth/ban-user/{banned.user_id}", headers=bearer(admin))
    assert ban.status_code == 200, ban.text
    rejected = await register_organizer(api)
    decision = await api.post(
        "/api/auth/verify-organizer",
        json={"organizer_id": rejected.role_id, "approve": False},
        headers=bearer(admin),
    )
    assert decision.status_code == 200, decision.text
    for account, state in (
        (unverified, "Email not verified"),
        (banned, "Account banned"),
        (rejected, "Account banned"),
    ):
        wrong = await login(api, account.email, "WrongPassword1")
        assert (wrong.status_code, wrong.json()) == (401, INCORRECT), state
        assert wrong.headers["www-authenticate"] == "Bearer", state
        # The right password is told the state: the account really is in it.
        right = await login(api, account.email, account.password)
        assert (right.status_code, right.json()) == (403, {"detail": state})


async def test_login_takes_a_form_not_json(api: httpx.AsyncClient) -> None:
    as_json = await api.post(
        "/api/auth/token", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert as_json.status_code == 422
    assert {tuple(e["loc"]) for e in as_json.json()["detail"]} == {
        ("body", "username"),
        ("body", "password"),
    }
    missing = await api.post("/api/auth/token", data={"username": ADMIN_EMAIL})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "password"]
    # An empty field is a missing one (§1.4: required strings are not blank), not a failed
    # attempt; an empty grant_type is no grant_type.
    for field in ("username", "password"):
        blank = await api.post(
            "/api/auth/token",
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, field: ""},
        )
        assert (blank.status_code, blank.json()["detail"]) == (
            422,
            [{"loc": ["body", field], "msg": "Field required", "type": "missing"}],
        )
    form = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "grant_type": ""}
    assert (await api.post("/api/auth/token", data=form)).status_code == 200


async def test_blank_required_strings_are_422_not_looked_up(api: httpx.AsyncClient) -> None:
    """§1.4: a required string that is empty or only spaces is refused as invalid input, as a
    blank login or name is, never taken for a wrong token, key or password (401, 400, 403)."""
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    valid = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    for blank in ("", "   "):
        refused = [
            (await api.post(REFRESH, json={"refresh_token": blank}), ["body", "refresh_token"]),
            (
                await api.post(
                    "/api/auth/reset-password", json={"token": blank, "new_password": "Strong123"}
                ),
                ["body", "token"],
            ),
            (
                await api.get("/api/auth/verify-email", params={"token": blank}),
                ["query", "token"],
            ),
            (
                await api.post(
                    "/api/user/change-password",
                    json={"current_password": blank, "new_password": "Strong123"},
                    headers=customer.headers,
                ),
                ["body", "current_password"],
            ),
            (
                await api.post(
                    "/api/auth/register/admin",
                    json={**new_account_fields(), "admin_secret_key": blank},
                    headers=bearer(admin),
                ),
                ["body", "admin_secret_key"],
            ),
        ]
        if blank:  # an empty form field is a missing one (above)
            for field in ("username", "password"):
                login_form = {**valid, field: blank}
                refused.append(
                    (await api.post("/api/auth/token", data=login_form), ["body", field])
                )
        for response, loc in refused:
            assert response.status_code == 422, (loc, response.text)
            assert [entry["loc"] for entry in response.json()["detail"]] == [loc], response.text
    # Nothing changed: the customer's password is still the one they signed in with.
    assert (await sign_in(api, customer)).token


async def test_login_takes_an_urlencoded_form_only_and_never_fails_on_its_bytes(
    api: httpx.AsyncClient,
) -> None:
    """§3.4: the body is `application/x-www-form-urlencoded`. A multipart body is refused like
    JSON (the gateway's per-account limit reads the url-encoded form, so it could not count
    one), and bytes that are not UTF-8 are a wrong email or password, never a 500."""
    multipart = await api.post(
        "/api/auth/token",
        data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        files={"note": ("note.txt", b"\xff\xfe", "text/plain; charset=bogus")},
    )
    assert multipart.status_code == 422, multipart.text
    assert {tuple(e["loc"]) for e in multipart.json()["detail"]} == {
        ("body", "username"),
        ("body", "password"),
    }
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in (b"username=\xff%40example.com&password=Secret1!", b"username=a%FF&password=%FE"):
        garbled = await api.post("/api/auth/token", content=body, headers=form)
        assert (garbled.status_code, garbled.json()) == (401, INCORRECT), body
    fields = [("username", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("username", "x@y.com")]
    twice = await api.post("/api/auth/token", content=urlencode(fields), headers=form)
    assert twice.status_code == 200, twice.text  # the first value of a repeated field counts


async def test_grant_type_must_be_password_when_present(api: httpx.AsyncClient) -> None:
    form = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "scope": "x", "client_id": "y"}
    ok = await api.post("/api/auth/token", data={**form, "grant_type": "password"})
    assert ok.status_code == 200
    bad = await api.post("/api/auth/token", data={**form, "grant_type": "client_credentials"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "grant_type"]


async def test_unverified_organizer_login_is_pending(api: httpx.AsyncClient) -> None:
    organizer = await register_organizer(api)
    response = await login(api, organizer.email, organizer.password)
    assert response.status_code == 200
    assert response.json() == {
        "token": "",
        "refresh_token": "",
        "message": "Your account is pending verification by an administrator",
    }


async def test_verified_organizer_token_says_verified(api: httpx.AsyncClient) -> None:
    organizer = await verified_organizer(api, await admin_token(api))
    assert claims(organizer.token)["verified"] is True
    assert claims(organizer.token)["role_id"] == organizer.role_id


async def test_refresh_rotates_the_refresh_token(api: httpx.AsyncClient) -> None:
    customer = await active_customer(api, await admin_token(api))
    response = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Token refreshed"
    assert body["refresh_token"] != customer.refresh_token
    assert claims(body["token"])["user_id"] == customer.user_id
    assert (await api.get("/api/user/me", headers=bearer(body["token"]))).status_code == 200
    again = await api.post(REFRESH, json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_chain(
    api: httpx.AsyncClient,
) -> None:
    customer = await active_customer(api, await admin_token(api))
    first = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    successor = first.json()["refresh_token"]
    replay = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert replay.status_code == 401 and replay.json() == {"detail": "Invalid refresh token"}
    assert replay.headers["www-authenticate"] == "Bearer"
    # The thief's (or the owner's) newer token of that chain is dead too.
    after = await api.post(REFRESH, json={"refresh_token": successor})
    assert after.status_code == 401 and after.json() == {"detail": "Invalid refresh token"}


async def test_an_expired_refresh_token_is_refused(api: httpx.AsyncClient, system: System) -> None:
    """§2.5, §3.5: a refresh token lives REFRESH_TOKEN_EXPIRE_DAYS; after that it is as
    invalid as an unknown one, and a new login starts a session that refreshes."""
    customer = await active_customer(api, await admin_token(api))
    await expire_refresh_tokens(system, customer.user_id)
    expired = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert (expired.status_code, expired.json()) == (401, {"detail": "Invalid refresh token"})
    assert expired.headers["www-authenticate"] == "Bearer"
    await sign_in(api, customer)
    fresh = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert fresh.status_code == 200, fresh.text


async def test_concurrent_refresh_of_one_token_has_one_winner(api: httpx.AsyncClient) -> None:
    customer = await active_customer(api, await admin_token(api))
    responses = await asyncio.gather(
        *(api.post(REFRESH, json={"refresh_token": customer.refresh_token}) for _ in range(2))
    )
    assert sorted(r.status_code for r in responses) == [200, 401]


async def test_refresh_errors(api: httpx.AsyncClient) -> None:
    unknown = await api.post(REFRESH, json={"refresh_token": "not-a-token"})
    assert unknown.status_code == 401 and unknown.json() == {"detail": "Invalid refresh token"}
    missing = await api.post(REFRESH, json={})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [
        {"loc": ["body", "refresh_token"], "msg": "Field required", "type": "missing"}
    ]
    customer = await active_customer(api, await admin_token(api))
    as_refresh = await api.post(REFRESH, json={"refresh_token": customer.token})
    assert as_refresh.status_code == 401


async def test_logout_revokes_the_access_token_and_the_refresh_chain(
    api: httpx.AsyncClient,
) -> None:
    customer = await active_customer(api, await admin_token(api))
    response = await api.post(
        LOGOUT, json={"refresh_token": customer.refresh_token}, headers=customer.headers
    )
    assert response.status_code == 200 and response.json() == {"message": "Logout successful"}
    me = await api.get("/api/user/me", headers=customer.headers)
    assert me.status_code == 401 and me.json() == {"detail": "Token has been revoked"}
    assert me.headers["www-authenticate"] == "Bearer"
    refresh = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert refresh.status_code == 401
    # A new login still works.
    assert (await login(api, customer.email, customer.password)).status_code == 200


async def test_logout_always_answers_200(api: httpx.AsyncClient) -> None:
    for kwargs in (
        {},
        {"headers": {"Authorization": "Bearer not.a.jwt"}},
        {"content": b"{broken", "headers": {"content-type": "application/json"}},
        {"json": {"refresh_token": "unknown"}},
    ):
        response = await api.post(LOGOUT, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200 and response.json() == {"message": "Logout successful"}


async def test_jwks_is_public_and_cacheable(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/auth/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")


async def test_routes_answer_with_and_without_trailing_slash(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    for path in ("/api/user/me", "/api/user/me/", "/api/auth/users/stats/"):
        assert (await api.get(path, headers=bearer(admin))).status_code == 200, path
    slash = await api.post(
        "/api/auth/token/", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert slash.status_code == 200


async def test_unknown_email_costs_a_password_hash_too(system: System) -> None:
    """Timing must not reveal whether an email exists: an unknown email is verified against a
    dummy hash. Measured directly on auth, so the gateway's rate limits stay out of the way."""

    async def median_seconds(email: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            response = await auth.post(
                "/api/auth/token", data={"username": email, "password": "WrongPassword1"}
            )
            times.append(time.perf_counter() - started)
            assert response.status_code == 401
        return statistics.median(times)

    async with httpx.AsyncClient(base_url=system.url("auth"), timeout=30) as auth:
        known = await median_seconds(ADMIN_EMAIL)
        unknown = await median_seconds(f"nobody-{uuid.uuid4().hex}@example.com")
    # Without the dummy hash an unknown email answers in a small fraction of the time.
    assert unknown > known * 0.5, (known, unknown)


async def test_a_password_changed_while_a_login_checks_the_old_one_refuses_that_login(
    api: httpx.AsyncClient, system: System
) -> None:
    """The reset commits after the login checked the old password but before it issued the
    session: the login is refused (API.md §3.11: the old password no longer opens anything),
    not handed a session the reset never revoked. Then a refresh racing a ban the same way."""
    customer = await active_customer(api, await admin_token(api))
    async with holding(  # a reset under way: the account locked, then changed
        system,
        "UPDATE auth.users SET password_hash = 'reset', tokens_invalid_before = now()"
        " WHERE user_id = $1",
        customer.user_id,
    ):
        logging_in = asyncio.create_task(login(api, customer.email, customer.password))
        await waiting_for_lock(system, "%auth.users%", logging_in)
    refused = await logging_in
    assert (refused.status_code, refused.json()) == (
        401,
        {"detail": "Incorrect email or password"},
    )

    other = await active_customer(api, await admin_token(api))
    async with holding(  # a ban under way
        system,
        "UPDATE auth.users SET banned_at = now(), tokens_invalid_before = now() WHERE user_id = $1",
        other.user_id,
    ):
        refreshing = asyncio.create_task(
            api.post("/api/auth/refresh", json={"refresh_token": other.refresh_token})
        )
        await waiting_for_lock(system, "%auth.users%", refreshing)
    banned = await refreshing
    assert (banned.status_code, banned.json()) == (403, {"detail": "Account banned"})


# Every path that changes an account's tokens locks the account first (API.md §1.2: a failed
# request is a clean answer). Each race below holds the account, lines the two requests up
# behind it in a known order, then lets them go: taken the other way round, the token then the
# account, the first two deadlock (PostgreSQL aborts one: a 500, or a ban not applied) and the
# third leaves the new refresh token alive.
LOCKED_ACCOUNT = "SELECT 1 FROM auth.users WHERE user_id = $1 FOR UPDATE"


async def test_a_refresh_racing_a_ban_is_refused_not_deadlocked(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    async with holding(system, LOCKED_ACCOUNT, customer.user_id):
        banning = asyncio.create_task(
            api.post(f"/api/auth/ban-user/{customer.user_id}", headers=bearer(admin))
        )
        await waiting_for_lock(system, "%auth.users%", banning)
        refreshing = asyncio.create_task(
            api.post(REFRESH, json={"refresh_token": customer.refresh_token})
        )
        await waiting_for_lock(system, "%auth.users%", refreshing, waiters=2)
    banned, refused = await banning, await refreshing
    assert banned.status_code == 200, banned.text
    assert (refused.status_code, refused.json()) == (401, {"detail": "Invalid refresh token"})
    again = await api.post(REFRESH, json={"refresh_token": customer.refresh_token})
    assert again.status_code == 401


async def test_a_replayed_token_racing_the_owners_refresh_revokes_the_new_one_too(
    api: httpx.AsyncClient, system: System
) -> None:
    """§2.5: an already rotated token presented revokes its whole chain, including the token
    a refresh committing at that moment issues."""
    customer = await active_customer(api, await admin_token(api))
    stolen = customer.refresh_token
    first = await api.post(REFRESH, json={"refresh_token": stolen})
    current = first.json()["refresh_token"]
    async with holding(system, LOCKED_ACCOUNT, customer.user_id):
        owner = asyncio.create_task(api.post(REFRESH, json={"refresh_token": current}))
        await waiting_for_lock(system, "%auth.users%", owner)
        thief = asyncio.create_task(api.post(REFRESH, json={"refresh_token": stolen}))
        await waiting_for_lock(system, "%auth.%", thief, waiters=2)
    rotated, replayed = await owner, await thief
    assert rotated.status_code == 200, rotated.text
    assert (replayed.status_code, replayed.json()) == (401, {"detail": "Invalid refresh token"})
    newest = await api.post(REFRESH, json={"refresh_token": rotated.json()["refresh_token"]})
    assert (newest.status_code, newest.json()) == (401, {"detail": "Invalid refresh token"})
