"""The initial administrator (API.md §2.6) on the real PostgreSQL: several auth instances
starting at once create exactly one, and an existing account is never altered."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from services.auth.config import load_auth_config
from services.auth.models import administrators, metadata, outbox, users
from services.auth.registration import ensure_initial_admin
from services.kernel.db import Database
from services.kernel.migrate import drop_database, ensure_database, upgrade
from tests.support.infra import database_url

CONFIG = load_auth_config(
    development=True,
    env={"INITIAL_ADMIN_EMAIL": "Boss@Resellio.COM", "INITIAL_ADMIN_PASSWORD": "BossPassword1"},
)


@pytest.fixture
async def auth_db() -> AsyncIterator[Database]:
    url = make_url(database_url()).set(database=f"resellio_auth_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    await asyncio.to_thread(upgrade, "auth", rendered)
    db = Database(rendered, "auth", metadata, pool_size=4)
    yield db
    await db.dispose()
    await drop_database(rendered)


async def test_instances_starting_together_create_one_admin(auth_db: Database) -> None:
    instances = [types.SimpleNamespace(db=auth_db) for _ in range(4)]
    await asyncio.gather(*(ensure_initial_admin(rt, CONFIG) for rt in instances))  # type: ignore[arg-type]
    await ensure_initial_admin(instances[0], CONFIG)  # type: ignore[arg-type]
    async with auth_db.engine.connect() as conn:
        admins = (await conn.execute(select(users))).all()
        assert [(u.email, u.role, u.account_state) for u in admins] == [
            ("Boss@resellio.com", "administrator", "active")
        ]
        assert await conn.scalar(select(func.count()).select_from(administrators)) == 1
        events = (await conn.execute(select(outbox.c.type, outbox.c.payload))).all()
    assert [e.type for e in events] == ["auth.UserRegistered"]
    assert events[0].payload["role"] == "administrator"
    assert events[0].payload["role_id"] == admins[0].role_id


async def test_an_existing_account_is_never_altered(auth_db: Database) -> None:
    rt = types.SimpleNamespace(db=auth_db)
    await ensure_initial_admin(rt, CONFIG)  # type: ignore[arg-type]
    async with auth_db.engine.begin() as conn:
        await conn.execute(update(users).values(password_hash="changed", first_name="Renamed"))
    await ensure_initial_admin(rt, CONFIG)  # type: ignore[arg-type]
    async with auth_db.engine.connect() as conn:
        row = (await conn.execute(select(users))).one()
    assert (row.password_hash, row.first_name) == ("changed", "Renamed")
