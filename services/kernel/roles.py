"""Least privilege in the database: one LOGIN role per service, with rights on its own schema only.

The migration owner (RESELLIO_DATABASE_URL) keeps owning every schema and table; each service
connects as its own role (RESELLIO_<SERVICE>_DATABASE_URL), which may read and write the rows of
its own schema and nothing else: no DDL, no other service's schema. Running it again converges
(password rotated, rights re-granted, stray rights on other schemas revoked).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import URL, make_url

from services.kernel.settings import SERVICES, Settings

TABLE_RIGHTS = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_RIGHTS = "USAGE, SELECT, UPDATE"


class RoleError(Exception):
    """A service role cannot be set up safely; the message says why."""


@dataclass(frozen=True)
class ServiceRole:
    schema: str  # the service's schema (the service name)
    name: str
    password: str | None


def roles_from_settings(cfg: Settings, services: Iterable[str] = SERVICES) -> list[ServiceRole]:
    """The role each service connects as, read from its RESELLIO_<SERVICE>_DATABASE_URL."""
    owner = make_url(cfg.database_url)
    roles = []
    for service in services:
        if service not in cfg.service_database_urls:
            continue
        url = make_url(cfg.service_database_urls[service])
        if not url.username or not url.password:
            raise RoleError(
                f"RESELLIO_{service.upper()}_DATABASE_URL must name a user and password"
            )
        if url.database != owner.database:
            raise RoleError(
                f"RESELLIO_{service.upper()}_DATABASE_URL names database {url.database!r}, "
                f"but the schemas live in {owner.database!r} (RESELLIO_DATABASE_URL)"
            )
        roles.append(ServiceRole(service, url.username, url.password))
    return roles


async def connect(url: URL | str) -> asyncpg.Connection:
    url = make_url(url)
    return await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=10,
    )


async def ensure_roles(
    owner_url: str, roles: Sequence[ServiceRole], schemas: Sequence[str] = SERVICES
) -> list[str]:
    """Create or update every role and its grants in one transaction; one line per role."""
    try:
        conn = await connect(owner_url)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"cannot connect as the migration owner (RESELLIO_DATABASE_URL): {exc}"
        raise RoleError(message) from exc
    try:
        async with conn.transaction():
            # Two deploy jobs at once must not interleave their GRANTs and REVOKEs.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('resellio:db-roles'))")
            return [await _ensure_role(conn, role, schemas) for role in roles]
    finally:
        await conn.close()


async def _sql(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Run DDL built by the server's own format(): %I quotes identifiers, %L literals."""
    statement = await conn.fetchval(
        "SELECT format($1::text, VARIADIC $2::text[])", template, values
    )
    await conn.execute(statement)


async def _ensure_role(conn: asyncpg.Connection, role: ServiceRole, schemas: Sequence[str]) -> str:
    owner = await conn.fetchval("SELECT current_user")
    database = await conn.fetchval("SELECT current_database()")
    if role.name == owner:
        raise RoleError(f"{role.schema} would connect as the migration owner {owner!r}")
    existing = await conn.fetchrow(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = $1", role.name
    )
    if existing and (existing["rolsuper"] or existing["rolcreaterole"]):
        raise RoleError(f"refusing to use the privileged role {role.name!r} for {role.schema}")
    # Plain CREATE/ALTER ... LOGIN: the defaults are NOSUPERUSER NOCREATEDB NOCREATEROLE, and
    # naming attributes like NOREPLICATION needs a true superuser, which managed PostgreSQL lacks.
    verb = "ALTER" if existing else "CREATE"
    if role.password is None:
        await _sql(conn, f"{verb} ROLE %I WITH LOGIN", role.name)
    else:
        await _sql(conn, f"{verb} ROLE %I WITH LOGIN PASSWORD %L", role.name, role.password)
    await _sql(conn, "GRANT CONNECT ON DATABASE %I TO %I", database, role.name)

    schema = role.schema
    await _sql(conn, "CREATE SCHEMA IF NOT EXISTS %I", schema)
    # Nobody gets in through PUBLIC; only the owner and the service's own role.
    await _sql(conn, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", schema)
    await _sql(conn, "GRANT USAGE ON SCHEMA %I TO %I", schema, role.name)
    await _sql(conn, f"GRANT {TABLE_RIGHTS} ON ALL TABLES IN SCHEMA %I TO %I", schema, role.name)
    await _sql(
        conn, f"GRANT {SEQUENCE_RIGHTS} ON ALL SEQUENCES IN SCHEMA %I TO %I", schema, role.name
    )
    # Tables the owner's later migrations create get the same rights without a new run.
    for kind, rights in (("TABLES", TABLE_RIGHTS), ("SEQUENCES", SEQUENCE_RIGHTS)):
        await _sql(
            conn,
            f"ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT {rights} ON {kind} TO %I",
            owner,
            schema,
            role.name,
        )
    # The schema version belongs to the migrations: the service may read it, not move it.
    if await conn.fetchval("SELECT to_regclass(format('%I.alembic_version', $1::text))", schema):
        await _sql(
            conn, "REVOKE INSERT, UPDATE, DELETE ON %I.alembic_version FROM %I", schema, role.name
        )

    for other in schemas:
        if other == schema or not await _schema_exists(conn, other):
            continue
        await _sql(conn, "REVOKE ALL ON SCHEMA %I FROM %I", other, role.name)
        await _sql(conn, "REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I", other, role.name)
        await _sql(conn, "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I", other, role.name)
        for kind in ("TABLES", "SEQUENCES"):
            await _sql(
                conn,
                f"ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I REVOKE ALL ON {kind} FROM %I",
                owner,
                other,
                role.name,
            )
    return (
        f"{'updated' if existing else 'created'} role {role.name}: rights on schema {schema} only"
    )


async def _schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    return found is not None
