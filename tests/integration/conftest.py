"""A private schema and private broker names per test, on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url

from services.kernel import broker
from services.kernel.db import Database
from services.kernel.migrate import drop_database, ensure_database, upgrade
from tests.support.infra import amqp_url, database_url


@pytest.fixture(scope="session")
async def integration_db_url() -> str:
    url = make_url(database_url()).set(database="resellio_integration")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    return rendered


@asynccontextmanager
async def migrated_database(service: str) -> AsyncIterator[str]:
    """A scratch database with `service`'s schema migrated (its URL), dropped afterwards."""
    url = make_url(database_url()).set(database=f"resellio_it{service[:3]}_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    try:
        await asyncio.to_thread(upgrade, service, rendered)
        yield rendered
    finally:
        await drop_database(rendered)


class Harness(Protocol):
    db: Database


H = TypeVar("H", bound=Harness)


@asynccontextmanager
async def migrated_harness(service: str, harness: Callable[[str], H]) -> AsyncIterator[H]:
    """`harness` built on a scratch database with `service`'s schema migrated; its pool
    closed, and the database dropped, afterwards."""
    async with migrated_database(service) as url:
        running = harness(url)
        try:
            yield running
        finally:
            await running.db.dispose()


@dataclass
class Bus:
    connection: AbstractRobustConnection
    channel: AbstractChannel
    names: broker.Names


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    connection = await broker.connect(amqp_url())
    channel = await connection.channel(publisher_confirms=True)
    yield Bus(connection, channel, broker.Names(f"it_{uuid.uuid4().hex[:10]}"))
    await connection.close()


@pytest.fixture
def schema_name() -> str:
    return f"it_{uuid.uuid4().hex[:10]}"


async def drop_schema(engine, schema: str) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@asynccontextmanager
async def schema_with(
    url: str, schema: str, tables: Callable[[MetaData], object], pool_size: int = 2
) -> AsyncIterator[Database]:
    """A private schema holding the tables `tables` declares, dropped afterwards."""
    metadata = MetaData(schema=schema)
    tables(metadata)
    db = Database(url, schema, metadata, pool_size=pool_size)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)
    try:
        yield db
    finally:
        await drop_schema(db.engine, schema)
        await db.dispose()
