"""Per-service schema migrations with alembic, each service in its own schema."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent


def alembic_config(service: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["schema"] = service
    return config


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, database_url), revision)


@functools.cache
def code_revisions(service: str) -> tuple[str, frozenset[str]]:
    """The head of a service's migrations in this code, and every revision this code knows."""
    script = ScriptDirectory.from_config(alembic_config(service, "postgresql://unused"))
    head = script.get_current_head()
    assert head is not None, f"{service} has no migrations"
    return head, frozenset(r.revision for r in script.walk_revisions())


async def schema_behind(conn: AsyncConnection, service: str, schema: str | None = None) -> bool:
    """Whether the service's schema is still to be migrated to this code's head: not migrated
    at all, or at an older revision this code knows. One at a revision this code does not know
    is a later release's (its migrations add, never take away): this code still runs on it."""
    head, known = code_revisions(service)
    table = f'"{schema or service}".alembic_version'
    if await conn.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is None:
        return True  # never migrated
    version = await conn.scalar(text(f"SELECT version_num FROM {table}"))
    return version != head and (version is None or version in known)


def run_env(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    config = context.config
    schema = metadata.schema
    assert schema, "service metadata must name its schema"
    url = config.get_main_option("sqlalchemy.url")

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            # Several instances may start at once: one migrates, the others wait, then no-op.
            await conn.execute(
                text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"migrate:{schema}"}
            )
            try:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()
                await conn.run_sync(run)
                await conn.commit()
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"migrate:{schema}"}
                )
                await conn.commit()
        await engine.dispose()

    asyncio.run(main())


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it is missing; True when it was created."""
    url = make_url(database_url)
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
            )
            if exists:
                return False
            await conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            return True
    finally:
        await admin.dispose()


async def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    finally:
        await admin.dispose()
