"""The admin user list (API.md §3.17) and stats (§3.18); /api/user (§4); the gateway's
deny-list (briefs/internal.md)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.actors import (
    active_customer,
    admin_token,
    bearer,
    claims,
    register_customer,
    register_organizer,
    unique,
    verified_organizer,
)
from tests.support.system import System

USERS = "/api/auth/users"


async def listed(api: httpx.AsyncClient, admin: str, **params: Any) -> httpx.Response:
    response = await api.get(USERS, params=params, headers=bearer(admin))
    assert response.status_code == 200, response.text
    return response


def ids(response: httpx.Response) -> list[int]:
    return [user["user_id"] for user in response.json()]


async def test_search_is_a_literal_case_insensitive_substring(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    tag = unique("t")
    percent = await register_customer(api, first_name=f"a%b_{tag}")
    lookalike = await register_customer(api, first_name=f"axbx{tag}")
    backslash = await register_customer(api, last_name=f"c\\d{tag}")
    by_login = await register_customer(api, login=f"L{tag}")
    assert ids(await listed(api, admin, search=f"a%b_{tag}")) == [percent.user_id]
    assert ids(await listed(api, admin, search=f"C\\D{tag}")) == [backslash.user_id]
    everyone = await listed(api, admin, search=tag.upper(), sort_order="asc")
    expected = [percent.user_id, lookalike.user_id, backslash.user_id, by_login.user_id]
    assert ids(everyone) == expected and everyone.headers["x-total-count"] == "4"
    by_email = await listed(api, admin, search=percent.email.upper())
    assert ids(by_email) == [percent.user_id]


async def test_sorting_is_byte_order_with_user_id_tie_breaker(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    tag = unique("s")
    lower_b = await register_customer(api, first_name=f"b{tag}", last_name=tag)
    upper_b = await register_customer(api, first_name=f"B{tag}", last_name=tag)
    lower_a = await register_customer(api, first_name=f"a{tag}", last_name=tag)
    twin = await register_customer(api, first_name=f"a{tag}", last_name=tag)
    ascending = await listed(api, admin, search=tag, sort_by="first_name", sort_order="ASC")
    assert ids(ascending) == [upper_b.user_id, lower_a.user_id, twin.user_id, lower_b.user_id]
    descending = await listed(api, admin, search=tag, sort_by="first_name", sort_order="desc")
    assert ids(descending) == [lower_b.user_id, twin.user_id, lower_a.user_id, upper_b.user_id]
    newest_first = await listed(api, admin, search=tag)
    assert ids(newest_first) == [twin.user_id, lower_a.user_id, upper_b.user_id, lower_b.user_id]


async def test_email_last_name_and_user_type_sorts_are_byte_order_with_user_id_tie_breaker(
    api: httpx.AsyncClient,
) -> None:
    admin = await admin_token(api)
    tag = unique("o")
    # Made in an order no sort repeats. In byte order "B" comes before "a" and "b"; a
    # linguistic collation would put "a" first.
    organizer = await register_organizer(api, email=f"b2{tag}@example.com", last_name=f"a{tag}")
    upper = await register_customer(api, email=f"B1{tag}@example.com", last_name=f"b{tag}")
    lower = await register_customer(api, email=f"a{tag}@example.com", last_name=f"B{tag}")
    twin = await register_customer(api, email=f"c{tag}@example.com", last_name=f"a{tag}")

    async def order(sort_by: str, sort_order: str) -> list[int]:
        response = await listed(api, admin, search=tag, sort_by=sort_by, sort_order=sort_order)
        assert response.headers["x-total-count"] == "4"
        return ids(response)

    by_email = [upper.user_id, lower.user_id, organizer.user_id, twin.user_id]
    assert await order("email", "asc") == by_email
    assert await order("email", "desc") == by_email[::-1]
    by_last_name = [lower.user_id, organizer.user_id, twin.user_id, upper.user_id]
    assert await order("last_name", "asc") == by_last_name  # the "a" twins by user_id
    assert await order("last_name", "desc") == by_last_name[::-1]  # ties in the same direction
    by_user_type = [upper.user_id, lower.user_id, twin.user_id, organizer.user_id]
    assert await order("user_type", "asc") == by_user_type  # customers, then the organizer
    assert await order("user_type", "desc") == by_user_type[::-1]


async def test_paging_and_total_count(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    tag = unique("p")
    made = [(await register_customer(api, last_name=tag)).user_id for _ in range(3)]
    pages = [
        await listed(api, admin, search=tag, sort_order="asc", limit=2, page=page)
        for page in (1, 2, 3)
    ]
    assert [ids(p) for p in pages] == [made[:2], made[2:], []]
    assert all(p.headers["x-total-count"] == "3" for p in pages)


async def test_filters(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    tag = unique("f")
    unverified = await register_customer(api, last_name=tag)
    active = await active_customer(api, admin, last_name=tag)
    pending = await register_organizer(api, last_name=tag)
    verified = await verified_organizer(api, admin, last_name=tag)
    banned = await register_customer(api, last_name=tag)
    await api.post(f"/api/auth/ban-user/{banned.user_id}", headers=bearer(admin))

    async def only(**params: Any) -> set[int]:
        return set(ids(await listed(api, admin, search=tag, **params)))

    assert await only(user_type="organizer") == {pending.user_id, verified.user_id}
    assert await only(user_type="customer") == {unverified.user_id, active.user_id, banned.user_id}
    assert await only(is_active="true") == {active.user_id, pending.user_id, verified.user_id}
    assert await only(is_active="0") == {unverified.user_id, banned.user_id}
    assert await only(is_verified="TRUE") == {verified.user_id}
    assert await only(is_verified="false") == {pending.user_id}
    assert await only(account_state="unverified") == {unverified.user_id}
    assert await only(account_state="banned") == {banned.user_id}
    assert await only(user_type="administrator") == set()


async def test_list_parameter_errors(api: httpx.AsyncClient) -> None:
    admin = bearer(await admin_token(api))
    for params, message in (
        (
            {"user_type": "root"},
            "Invalid user_type. Must be one of: customer, organizer, administrator",
        ),
        (
            {"account_state": "gone"},
            "Invalid account_state. Must be one of: active, unverified, banned",
        ),
        (
            {"sort_by": "password"},
            "Invalid sort_by. Must be one of: creation_date, email, first_name, last_name, user_type",
        ),
        ({"sort_order": "up"}, "Invalid sort_order. Must be 'asc' or 'desc'"),
    ):
        response = await api.get(USERS, params=params, headers=admin)
        assert response.status_code == 400 and response.json() == {"detail": message}, params
    for params in ({"limit": 0}, {"limit": 101}, {"page": 0}, {"page": "x"}, {"is_active": "yes"}):
        response = await api.get(USERS, params=params, headers=admin)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][0] == "query"


async def stats(api: httpx.AsyncClient, admin: str) -> dict[str, int]:
    """GET /api/auth/users/stats, its nested counts flattened (`organizer_stats.rejected`)."""
    response = await api.get(f"{USERS}/stats", headers=bearer(admin))
    assert response.status_code == 200, response.text
    flat: dict[str, int] = {}
    for key, value in response.json().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": count for inner, count in value.items()})
        else:
            flat[key] = value
    return flat


async def pending_ids(api: httpx.AsyncClient, admin: str) -> list[int]:
    response = await api.get("/api/auth/pending-organizers", headers=bearer(admin))
    assert response.status_code == 200, response.text
    return ids(response)


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    assert set(after) == set(before)
    return {key: after[key] - before[key] for key in after}


async def test_stats_count_each_account_where_it_belongs(api: httpx.AsyncClient) -> None:
    """§3.18: `banned_users` is every inactive account (unverified or banned); a registered
    organizer is pending, and once rejected it is rejected and banned, no longer pending."""
    admin = await admin_token(api)
    before = await stats(api, admin)
    assert set(before) == {
        "total_users",
        "active_users",
        "banned_users",
        "unverified_users",
        "users_by_type.customers",
        "users_by_type.organizers",
        "users_by_type.administrators",
        "organizer_stats.verified",
        "organizer_stats.pending",
        "organizer_stats.rejected",
    }
    await register_customer(api)
    organizer = await register_organizer(api)
    registered = await stats(api, admin)
    assert changes(before, registered) == {
        "total_users": 2,
        "active_users": 1,  # the organizer
        "banned_users": 1,  # the unverified customer
        "unverified_users": 1,
        "users_by_type.customers": 1,
        "users_by_type.organizers": 1,
        "users_by_type.administrators": 0,
        "organizer_stats.verified": 0,
        "organizer_stats.pending": 1,
        "organizer_stats.rejected": 0,
    }
    assert organizer.user_id in await pending_ids(api, admin)

    decision = await api.post(
        "/api/auth/verify-organizer",
        json={"organizer_id": organizer.role_id, "approve": False},
        headers=bearer(admin),
    )
    assert decision.status_code == 200 and decision.json()["account_state"] == "banned"
    rejected = await stats(api, admin)
    assert changes(registered, rejected) == {
        "total_users": 0,
        "active_users": -1,
        "banned_users": 1,
        "unverified_users": 0,
        "users_by_type.customers": 0,
        "users_by_type.organizers": 0,
        "users_by_type.administrators": 0,
        "organizer_stats.verified": 0,
        "organizer_stats.pending": -1,
        "organizer_stats.rejected": 1,
    }
    assert organizer.user_id not in await pending_ids(api, admin)
    # The sums API.md promises hold for the whole table, not just for these two accounts.
    assert rejected["total_users"] == rejected["active_users"] + rejected["banned_users"]
    assert rejected["users_by_type.organizers"] == sum(
        rejected[f"organizer_stats.{kind}"] for kind in ("verified", "pending", "rejected")
    )


async def test_me_and_update_profile(api: httpx.AsyncClient) -> None:
    organizer = await register_organizer(api)
    me = await api.get("/api/user/me", headers=organizer.headers)
    assert me.status_code == 200 and me.json()["user_type"] == "organizer"
    new_login = unique("login")
    response = await api.put(
        "/api/user/update-profile",
        json={"first_name": "Grace", "login": new_login, "email": "ignored@example.com"},
        headers=organizer.headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["first_name"], body["last_name"], body["login"]) == (
        "Grace",
        organizer.last_name,
        new_login,
    )
    assert body["email"] == organizer.email
    unchanged = await api.put(
        "/api/user/update-profile", json={"last_name": None}, headers=organizer.headers
    )
    assert unchanged.status_code == 200 and unchanged.json() == body
    same_login = await api.put(
        "/api/user/update-profile", json={"login": new_login}, headers=organizer.headers
    )
    assert same_login.status_code == 200


async def test_update_profile_errors(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    customer = await active_customer(api, admin)
    other = await register_customer(api)
    taken = await api.put(
        "/api/user/update-profile", json={"login": other.login}, headers=customer.headers
    )
    assert taken.status_code == 400 and taken.json() == {"detail": "Login already taken"}
    blank = await api.put(
        "/api/user/update-profile", json={"first_name": " "}, headers=customer.headers
    )
    assert blank.status_code == 422
    long = await api.put(
        "/api/user/update-profile", json={"last_name": "x" * 256}, headers=customer.headers
    )
    assert long.status_code == 422
    anonymous = await api.put("/api/user/update-profile", json={})
    assert anonymous.status_code == 401


async def test_profile_hides_login_and_email_from_others(api: httpx.AsyncClient) -> None:
    admin = await admin_token(api)
    viewer = await active_customer(api, admin)
    subject = await register_organizer(api)
    path = f"/api/user/profile/{subject.user_id}"
    seen = (await api.get(path, headers=viewer.headers)).json()
    assert seen == {
        "user_id": subject.user_id,
        "email": None,
        "login": None,
        "first_name": subject.first_name,
        "last_name": subject.last_name,
        "user_type": "organizer",
        "is_active": True,
        "account_state": "active",
    }
    for token in (admin, subject.token):
        own = (await api.get(path, headers=bearer(token))).json()
        assert (own["email"], own["login"]) == (subject.email, subject.login)
    assert (await api.get("/api/user/profile/x", headers=viewer.headers)).status_code == 422
    missing = await api.get("/api/user/profile/0", headers=viewer.headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "User not found"}


async def test_denylist_lists_bans_revocations_and_cut_offs(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    banned = await active_customer(api, admin)
    logged_out = await active_customer(api, admin)
    await api.post(f"/api/auth/ban-user/{banned.user_id}", headers=bearer(admin))
    await api.post("/api/auth/logout", headers=logged_out.headers)
    async with httpx.AsyncClient(base_url=system.url("auth")) as auth:
        response = await auth.get("/internal/denylist")
    assert response.status_code == 200
    body = response.json()
    assert banned.user_id in body["banned_user_ids"]
    assert logged_out.user_id not in body["banned_user_ids"]
    jti = claims(logged_out.token)["jti"]
    assert body["revoked_jtis"][jti] == claims(logged_out.token)["exp"]
    cut_off = body["tokens_invalid_before"][str(banned.user_id)]
    assert isinstance(cut_off, float) and cut_off > claims(banned.token)["iat"]
