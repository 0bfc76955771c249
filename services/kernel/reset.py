"""Wiping a development deployment: every service schema and the broker's queues."""

from __future__ import annotations

import contextlib

import aiormq
from sqlalchemy import text

from services.kernel import broker
from services.kernel.db import create_engine
from services.kernel.settings import SERVICES, Settings
from services.topology import subscriptions


async def wipe(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for schema in SERVICES:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
    names = broker.Names(settings.broker_prefix)
    connection = await broker.connect(settings.amqp_url)
    async with connection:
        for consumer in subscriptions():
            queues = [names.queue(consumer), names.dead_letter_queue(consumer)]
            queues += [names.retry_queue(consumer, d) for d in settings.consumer_retry_delays_ms]
            for queue in queues:
                channel = await connection.channel()
                with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
                    await (await channel.get_queue(queue, ensure=True)).purge()
