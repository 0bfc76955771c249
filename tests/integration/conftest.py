"""A private schema and private broker names per test, on the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.kernel import broker
from services.kernel.migrate import ensure_database
from tests.support.infra import amqp_url, database_url


@pytest.fixture(scope="session")
async def integration_db_url() -> str:
    url = make_url(database_url()).set(database="resellio_integration")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    return rendered


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
