"""The gateway's route table (API.md §1.1) and the paths it treats specially."""

from __future__ import annotations

import pytest

from gateway.routes import (
    TOKEN_EXEMPT,
    ban_target,
    event_page_id,
    service_for,
    without_trailing_slash,
)


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/auth/token", "auth"),
        ("/api/user/me", "auth"),
        ("/api/locations", "catalog"),
        ("/api/locations/3", "catalog"),
        ("/api/events", "catalog"),
        ("/api/events/7/notify", "catalog"),
        ("/api/ticket-types/1", "catalog"),
        ("/api/cart/items", "ordering"),
        ("/api/orders", "ordering"),
        ("/api/tickets", "ordering"),
        ("/api/tickets/5/download", "ordering"),
        ("/api/tickets/check-in", "ordering"),
        ("/api/tickets/5/resell", "resale"),
        ("/api/resale/marketplace", "resale"),
    ],
)
def test_every_public_prefix_goes_to_its_service(path: str, service: str) -> None:
    assert service_for(path) == service


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/eventsx", "/api/nothing", "/apix/auth"])
def test_paths_of_no_service_have_none(path: str) -> None:
    assert service_for(path) is None


def test_trailing_slashes_are_dropped_but_root_stays() -> None:
    assert without_trailing_slash("/api/events/") == "/api/events"
    assert without_trailing_slash("/api/events//") == "/api/events"
    assert without_trailing_slash("/") == "/"
    assert without_trailing_slash("/api/events") == "/api/events"


def test_only_the_event_page_itself_is_composed() -> None:
    assert event_page_id("/api/events/12") == "12"
    assert event_page_id("/api/events/abc") == "abc"  # catalog answers its 422
    assert event_page_id("/api/events") is None
    assert event_page_id("/api/events/12/notify") is None
    assert event_page_id("/api/events/authorize/12") is None


def test_ban_and_unban_paths_name_the_user() -> None:
    assert ban_target("/api/auth/ban-user/42") == (True, 42)
    assert ban_target("/api/auth/unban-user/42") == (False, 42)
    assert ban_target("/api/auth/ban-user/x") is None
    assert ban_target("/api/auth/ban-user/99999999999") is None
    assert ban_target("/api/auth/ban-user/" + "9" * 5000) is None
    assert ban_target("/api/auth/ban-user/1_0") is None  # auth answers its 422
    assert ban_target("/api/auth/ban-user/0042") == (True, 42)  # auth's user 42 too
    assert ban_target("/api/auth/users/42") is None


def test_public_auth_endpoints_ignore_a_bad_token_but_admin_registration_does_not() -> None:
    assert "/api/auth/token" in TOKEN_EXEMPT
    assert "/api/auth/logout" in TOKEN_EXEMPT
    assert "/api/auth/.well-known/jwks.json" in TOKEN_EXEMPT
    assert "/api/auth/register/admin" not in TOKEN_EXEMPT
    assert "/api/user/me" not in TOKEN_EXEMPT
