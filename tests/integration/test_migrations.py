"""Every service's migrations build the schema its models describe: a column, table or index
added to a model without its migration (or the reverse) fails here, not in production."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

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
