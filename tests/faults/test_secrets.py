"""Secrets and defaults: production refuses the public development secrets, and no token,
password or ticket code ever reaches a log, over a full run of the marketplace."""

from __future__ import annotations

import httpx
import pytest

from services.auth.config import DEV_ADMIN_PASSWORD, DEV_ADMIN_SECRET_KEY, load_auth_config
from services.kernel.settings import ConfigError
from tests.faults.conftest import Rig
from tests.faults.workload import Outcomes, buy_listed, market
from tests.support.actors import (
    PASSWORD,
    RESET_SUBJECT,
    activate_by_email,
    login,
    mailed_token,
    register_customer,
    sign_in,
)
from tests.support.invariants import check_invariants, db_rows

PRODUCTION = {
    "INITIAL_ADMIN_EMAIL": "root@example.com",
    "INITIAL_ADMIN_PASSWORD": "Sup3rSecretAdmin",
    "ADMIN_SECRET_KEY": "k" * 32,
    "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----",
}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INITIAL_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD),
        ("ADMIN_SECRET_KEY", DEV_ADMIN_SECRET_KEY),
        ("JWT_PRIVATE_KEY", ""),
        ("ADMIN_SECRET_KEY", ""),
    ],
)
def test_production_refuses_development_defaults_and_missing_secrets(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_auth_config(development=False, env={**PRODUCTION, name: value})
    load_auth_config(development=False, env=PRODUCTION)  # with its own secrets it starts


async def test_no_secret_in_any_log(rig: Rig, gw: httpx.AsyncClient) -> None:
    system = rig.system
    secrets: dict[str, str] = {"password": PASSWORD}
    shop = await market(gw, buyers=1, sellers=1)
    seller, ticket_id = shop.listed[0]
    out = Outcomes()
    bought = await buy_listed(gw, shop.buyers[0], ticket_id, out)
    assert bought is not None and bought.status_code == 200, out

    # Verification by mail, login, refresh, password reset, login with the new password.
    fresh = await register_customer(gw)
    secrets["verification token"] = await mailed_token(system, fresh.email)
    await activate_by_email(gw, system, fresh)
    await sign_in(gw, fresh)
    secrets |= {"access token": fresh.token, "refresh token": fresh.refresh_token}
    refreshed = await gw.post("/api/auth/refresh", json={"refresh_token": fresh.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    secrets |= {
        "refreshed access token": refreshed.json()["token"],
        "rotated refresh token": refreshed.json()["refresh_token"],
    }
    asked = await gw.post("/api/auth/request-password-reset", json={"email": fresh.email})
    assert asked.status_code == 200, asked.text
    secrets["reset token"] = await mailed_token(system, fresh.email, subject=RESET_SUBJECT)
    new_password = "BrandNewPass123"
    reset = await gw.post(
        "/api/auth/reset-password",
        json={"token": secrets["reset token"], "new_password": new_password},
    )
    assert reset.status_code == 200, reset.text
    secrets["new password"] = new_password
    assert (await login(gw, fresh.email, new_password)).status_code == 200
    secrets |= {"buyer token": shop.buyers[0].token, "seller token": seller.token}
    secrets["admin token"] = shop.admin
    codes = await db_rows(system, "SELECT ticket_id, code FROM ordering.tickets")
    secrets |= {f"ticket code {r.ticket_id}": r.code for r in codes}

    report = await check_invariants(system)  # everything has been handled (and logged)
    logs = {path.name: path.read_text(errors="replace") for path in system.workdir.glob("*.log")}
    assert {"auth.log", "ordering.log", "resale.log", "gateway.log"} <= set(logs)
    leaks = [
        f"{what} in {name}"
        for what, secret in secrets.items()
        for name, text in logs.items()
        if secret and secret in text
    ]
    assert leaks == []
    print(
        f"\ninjected: a full run (purchase, resale, verification, login, refresh, reset); "
        f"{len(secrets)} secrets searched in {len(logs)} logs "
        f"({sum(len(t) for t in logs.values())} bytes): none found; invariants: {report}"
    )
