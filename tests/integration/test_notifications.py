"""One LISTEN connection serves every channel a process follows, and tells its subscribers
when it stops and starts listening (a lost connection comes back by itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import MetaData, text

from services.kernel.db import Database
from services.kernel.notifications import Notifications


@pytest.fixture
async def db(integration_db_url: str) -> AsyncIterator[Database]:
    database = Database(integration_db_url, "public", MetaData(schema="public"), 2)
    yield database
    await database.dispose()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def notify(db: Database, channel: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})


async def test_one_connection_serves_every_channel_and_comes_back(db: Database) -> None:
    seen: list[str] = []
    live: list[bool] = []
    listener = Notifications(db, reconnect_s=0.1)
    listener.subscribe("it_outbox", lambda: seen.append("outbox"))
    listener.subscribe("it_changed", lambda: seen.append("changed"), live.append)
    task = asyncio.create_task(listener.run())
    try:
        await until(lambda: live == [True])
        await notify(db, "it_changed")
        await notify(db, "it_outbox")
        await notify(db, "it_elsewhere")
        await until(lambda: len(seen) == 2)
        assert seen == ["changed", "outbox"]
        async with db.engine.begin() as conn:
            listening = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            )
            assert listening >= 1
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%it_%' AND pid <> pg_backend_pid()"
                )
            )
        await until(lambda: live == [True, False, True])
        await notify(db, "it_outbox")
        await until(lambda: seen[-1:] == ["outbox"] and len(seen) == 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
