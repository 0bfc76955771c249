"""Least privilege on the real PostgreSQL: a service's role uses its own schema and no other.

Each test works in a scratch database with role names carrying a random suffix (roles are
cluster-wide), and drops both afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from services.kernel.migrate import drop_database, ensure_database
from services.kernel.roles import RoleError, ServiceRole, connect, ensure_roles, roles_from_settings
from services.kernel.settings import load
from tests.support.infra import database_url

DENIED = asyncpg.InsufficientPrivilegeError


@dataclass
class Scratch:
    owner_url: str
    auth: ServiceRole
    catalog: ServiceRole

    def url_of(self, role: ServiceRole) -> str:
        url = make_url(self.owner_url).set(username=role.name, password=role.password)
        return url.render_as_string(hide_password=False)


async def _owner(scratch: Scratch, *statements: str) -> None:
    conn = await connect(scratch.owner_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def scratch() -> AsyncIterator[Scratch]:
    suffix = uuid.uuid4().hex[:8]
    owner_url = (
        make_url(database_url())
        .set(database=f"resellio_roles_{suffix}")
        .render_as_string(hide_password=False)
    )
    await ensure_database(owner_url)
    pw = uuid.uuid4().hex
    scratch = Scratch(
        owner_url,
        ServiceRole("auth", f"resellio_auth_{suffix}", pw),
        ServiceRole("catalog", f"resellio_catalog_{suffix}", pw),
    )
    # What the migrations leave behind: two schemas owned by the migration owner.
    await _owner(
        scratch,
        "CREATE SCHEMA auth",
        "CREATE TABLE auth.users (id serial PRIMARY KEY, email text NOT NULL)",
        "CREATE TABLE auth.alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO auth.alembic_version VALUES ('abc123')",
        "CREATE SCHEMA catalog",
        "CREATE TABLE catalog.events (id serial PRIMARY KEY, name text NOT NULL)",
        "INSERT INTO catalog.events (name) VALUES ('Opening night')",
    )
    try:
        yield scratch
    finally:
        await drop_database(owner_url)  # drops the grants and default privileges with it
        # Roles are cluster-wide: any database will do, and "postgres" is always there.
        conn = await connect(make_url(database_url()).set(database="postgres"))
        try:
            for role in (scratch.auth, scratch.catalog):
                await conn.execute(f'DROP ROLE IF EXISTS "{role.name}"')
        finally:
            await conn.close()


async def test_a_service_role_reads_and_writes_its_own_schema(scratch: Scratch) -> None:
    await ensure_roles(scratch.owner_url, [scratch.auth, scratch.catalog])
    conn = await connect(scratch.url_of(scratch.auth))
    try:
        user_id = await conn.fetchval(
            "INSERT INTO auth.users (email) VALUES ('a@example.com') RETURNING id"
        )
        await conn.execute("UPDATE auth.users SET email = 'b@example.com' WHERE id = $1", user_id)
        assert await conn.fetchval("SELECT email FROM auth.users WHERE id = $1", user_id) == (
            "b@example.com"
        )
        await conn.execute("DELETE FROM auth.users WHERE id = $1", user_id)
        assert await conn.fetchval("SELECT version_num FROM auth.alembic_version") == "abc123"
    finally:
        await conn.close()


async def test_a_service_role_cannot_read_or_write_another_services_schema(
    scratch: Scratch,
) -> None:
    await ensure_roles(scratch.owner_url, [scratch.auth, scratch.catalog])
    conn = await connect(scratch.url_of(scratch.auth))
    try:
        for statement in (
            "SELECT name FROM catalog.events",
            "INSERT INTO catalog.events (name) VALUES ('forged')",
            "UPDATE catalog.events SET name = 'renamed'",
            "DELETE FROM catalog.events",
            "SELECT nextval('catalog.events_id_seq')",
            "CREATE TABLE catalog.stolen (id int)",
        ):
            with pytest.raises(DENIED):
                await conn.execute(statement)
    finally:
        await conn.close()
    # And the other way round: catalog's role cannot touch auth.
    conn = await connect(scratch.url_of(scratch.catalog))
    try:
        assert await conn.fetchval("SELECT count(*) FROM catalog.events") == 1
        with pytest.raises(DENIED):
            await conn.execute("SELECT email FROM auth.users")
    finally:
        await conn.close()
    conn = await connect(scratch.owner_url)
    try:
        assert await conn.fetchval("SELECT name FROM catalog.events") == "Opening night"
    finally:
        await conn.close()


async def test_a_service_role_cannot_change_the_schema_or_its_version(scratch: Scratch) -> None:
    await ensure_roles(scratch.owner_url, [scratch.auth])
    conn = await connect(scratch.url_of(scratch.auth))
    try:
        for statement in (
            "CREATE TABLE auth.extra (id int)",
            "DROP TABLE auth.users",
            "ALTER TABLE auth.users ADD COLUMN admin boolean",
            "UPDATE auth.alembic_version SET version_num = 'forged'",
            "TRUNCATE auth.users",
        ):
            with pytest.raises(DENIED):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_tables_added_by_later_migrations_are_usable_without_a_new_run(
    scratch: Scratch,
) -> None:
    await ensure_roles(scratch.owner_url, [scratch.auth, scratch.catalog])
    await _owner(
        scratch,
        "CREATE TABLE auth.refresh_tokens (id bigserial PRIMARY KEY, jti text)",
        "CREATE TABLE catalog.locations (id serial PRIMARY KEY, name text)",
    )
    conn = await connect(scratch.url_of(scratch.auth))
    try:
        await conn.execute("INSERT INTO auth.refresh_tokens (jti) VALUES ('x')")
        assert await conn.fetchval("SELECT count(*) FROM auth.refresh_tokens") == 1
        with pytest.raises(DENIED):
            await conn.execute("SELECT * FROM catalog.locations")
    finally:
        await conn.close()


async def test_running_again_converges_and_revokes_stray_rights(scratch: Scratch) -> None:
    await ensure_roles(scratch.owner_url, [scratch.auth])
    # Someone granted auth's role a right on catalog by hand; the next run takes it away.
    await _owner(
        scratch,
        f'GRANT USAGE ON SCHEMA catalog TO "{scratch.auth.name}"',
        f'GRANT SELECT ON catalog.events TO "{scratch.auth.name}"',
    )
    lines = await ensure_roles(scratch.owner_url, [scratch.auth])
    assert lines == [f"updated role {scratch.auth.name}: rights on schema auth only"]
    conn = await connect(scratch.url_of(scratch.auth))
    try:
        assert await conn.fetchval("SELECT count(*) FROM auth.users") == 0
        with pytest.raises(DENIED):
            await conn.execute("SELECT name FROM catalog.events")
    finally:
        await conn.close()


async def test_the_owner_and_privileged_roles_are_never_turned_into_service_roles(
    scratch: Scratch,
) -> None:
    owner = make_url(scratch.owner_url).username or "postgres"
    with pytest.raises(RoleError, match="migration owner"):
        await ensure_roles(scratch.owner_url, [ServiceRole("auth", owner, "x")])
    # A URL pointing at an existing role that may create roles is refused, not downgraded.
    await _owner(scratch, f'CREATE ROLE "{scratch.auth.name}" LOGIN CREATEROLE')
    with pytest.raises(RoleError, match="privileged role"):
        await ensure_roles(scratch.owner_url, [scratch.auth])


def test_roles_come_from_each_services_database_url() -> None:
    cfg = load(
        {
            "RESELLIO_DATABASE_URL": "postgresql+asyncpg://owner:pw@db:5432/resellio",
            "RESELLIO_AUTH_DATABASE_URL": "postgresql+asyncpg://resellio_auth:s3cret@db/resellio",
        }
    )
    assert roles_from_settings(cfg) == [ServiceRole("auth", "resellio_auth", "s3cret")]
    wrong_db = load(
        {
            "RESELLIO_DATABASE_URL": "postgresql+asyncpg://owner:pw@db:5432/resellio",
            "RESELLIO_AUTH_DATABASE_URL": "postgresql+asyncpg://resellio_auth:s3cret@db/other",
        }
    )
    with pytest.raises(RoleError, match="database 'other'"):
        roles_from_settings(wrong_db)
    no_password = load(
        {"RESELLIO_CATALOG_DATABASE_URL": "postgresql+asyncpg://resellio_catalog@db/resellio"}
    )
    with pytest.raises(RoleError, match="user and password"):
        roles_from_settings(no_password)
