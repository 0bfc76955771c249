"""Every service's migrations build the schema its models describe: a column, table or index
added to a model without its migration (or the reverse) fails here, not in production."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, MetaData, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.kernel.app import Runtime, _schema_migrated
from services.kernel.db import Database
from services.kernel.migrate import alembic_config, schema_behind, upgrade
from tests.integration.conftest import migrated_database


def _expression_indexes(metadata: MetaData) -> set[str]:
    """Indexes on expressions (COLLATE "C"), which alembic cannot compare."""
    return {
        str(index.name)
        for table in metadata.tables.values()
        for index in table.indexes
        if isinstance(index, Index) and any(not hasattr(e, "table") for e in index.expressions)
    }


def _differences(connection: Connection, schema: str, metadata: MetaData) -> list[Any]:
    skipped = _expression_indexes(metadata)

    def include(obj: object, name: str | None, type_: str, reflected: bool, to: object) -> bool:
        if type_ == "table":
            return name != "alembic_version"
        return not (type_ == "index" and name in skipped)

    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_schemas": True,
            "include_name": lambda name, type_, parent: type_ != "schema" or name == schema,
            "include_object": include,
        },
    )
    return compare_metadata(context, metadata)


@pytest.mark.parametrize("service", ["auth", "catalog", "ordering", "resale"])
async def test_migrations_build_the_models_schema(service: str) -> None:
    metadata = importlib.import_module(f"services.{service}.models").metadata
    async with migrated_database(service) as url:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                differences = await conn.run_sync(_differences, service, metadata)
        finally:
            await engine.dispose()
    assert differences == []


async def test_categories_stored_before_they_were_trimmed_are_trimmed() -> None:
    """An event written before the API trimmed its categories (" Blues ") is found by the
    filter after the migration, as one written today; the others are left as they were."""
    async with migrated_database("catalog") as url:
        # Back to the revision before the trimming (migrated_database went to the head).
        await asyncio.to_thread(command.downgrade, alembic_config("catalog", url), "e7c1b4f9a3d5")
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                location = await conn.scalar(
                    text(
                        "INSERT INTO catalog.locations (name, address, city, country)"
                        " VALUES ('Hall', '1 Road', 'Oslo', 'Norway') RETURNING location_id"
                    )
                )
                for categories in (
                    [" Blues ", "blues", "Jazz\u00a0", "Soul"],
                    ["Rock", "Pop"],
                    ["  "],
                ):
                    await conn.execute(
                        text(
                            "INSERT INTO catalog.events (organizer_id, name, start_date,"
                            " end_date, location_id, status, categories, categories_key)"
                            " VALUES (1, 'E', now(), now(), :l, 'created', :c, :k)"
                        ).bindparams(
                            bindparam("c", type_=ARRAY(Text)), bindparam("k", type_=ARRAY(Text))
                        ),
                        {"l": location, "c": categories, "k": [c.lower() for c in categories]},
                    )
            await asyncio.to_thread(upgrade, "catalog", url)
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT categories, categories_key FROM catalog.events"
                            " ORDER BY event_id"
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
    assert [tuple(row) for row in rows] == [
        (["Blues", "Jazz", "Soul"], ["blues", "jazz", "soul"]),
        (["Rock", "Pop"], ["rock", "pop"]),
        ([], []),
    ]


async def test_a_schema_is_behind_until_migrated_to_this_codes_head() -> None:
    """What a service's /ready reads: its schema never migrated, or at an older revision this
    code knows, is behind (a new release's instance waits for its migrations); at the head,
    or at a revision this code does not know (a later release's), it is not."""
    async with migrated_database("catalog") as url:
        engine = create_async_engine(url)
        try:

            async def behind() -> bool:
                async with engine.connect() as conn:
                    return await schema_behind(conn, "catalog")

            assert await behind() is False
            await asyncio.to_thread(command.downgrade, alembic_config("catalog", url), "-1")
            assert await behind() is True
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE catalog.alembic_version SET version_num = 'f00d'"))
            assert await behind() is False
            async with engine.begin() as conn:
                await conn.execute(text("DROP TABLE catalog.alembic_version"))
            assert await behind() is True
        finally:
            await engine.dispose()


async def test_a_service_starts_its_work_only_once_its_schema_is_migrated() -> None:
    """A new release's instance started beside its migrations waits for them (before its
    relay, consumer and mail sender, and before it answers), then goes on."""
    async with migrated_database("catalog") as url:
        await asyncio.to_thread(command.downgrade, alembic_config("catalog", url), "-1")
        metadata = importlib.import_module("services.catalog.models").metadata
        db = Database(url, "catalog", metadata, pool_size=2)
        rt = Runtime("catalog", None, db, None, None, None, None)  # type: ignore[arg-type]
        try:
            waiting = asyncio.create_task(_schema_migrated(rt))
            await asyncio.sleep(1.5)
            assert not waiting.done()
            await asyncio.to_thread(upgrade, "catalog", url)
            await asyncio.wait_for(waiting, 5)
            assert await rt.schema_ok()
        finally:
            await db.dispose()
