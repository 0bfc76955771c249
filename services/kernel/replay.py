"""Replaying the event log into one consumer's queue (other consumers see nothing).

Replayed events travel in packs: one message carries up to PACK events in log order (a JSON
array of envelopes), so a replay costs a publish per pack rather than per event. Every pack of
a replay names the same aggregate, so the consumer applies the packs in order, each in one
transaction (its inbox still records, and deduplicates, every event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel import relay
from services.kernel.broker import Names
from services.kernel.eventlog import (
    Filters,
    count_for_replay,
    producers_with_log,
    stream_for_replay,
)
from services.kernel.relay import PACK_CONTENT_TYPE, envelope_bytes
from services.kernel.settings import SERVICES

WINDOW = 50  # packs awaiting their confirms at once
PACK = 250  # events per message


@dataclass
class ReplayPlan:
    consumer: str
    counts: dict[str, int] = field(default_factory=dict)  # by event type

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _wanted(subscribed: list[str], filters: Filters) -> list[str]:
    return [t for t in subscribed if not filters.types or t in filters.types]


async def plan(
    engine: AsyncEngine,
    consumer: str,
    subscribed: list[str],
    filters: Filters,
    candidates: Sequence[str] = SERVICES,
) -> ReplayPlan:
    result = ReplayPlan(consumer)
    types = _wanted(subscribed, filters)
    if not types:
        return result
    for producer in await producers_with_log(engine, candidates):
        if filters.producer not in (None, producer):
            continue
        scoped = Filters(**{**filters.__dict__, "types": types})
        for event_type, n in (await count_for_replay(engine, producer, scoped)).items():
            result.counts[event_type] = result.counts.get(event_type, 0) + n
    return result


async def _merged(
    engine: AsyncEngine, producers: list[str], filters: Filters
) -> AsyncIterator[tuple[str, Any]]:
    """All producers' events in occurrence order; each producer's own order (sequence) is kept."""
    streams = {p: stream_for_replay(engine, p, filters).__aiter__() for p in producers}
    heads: dict[str, Any] = {}
    for p, stream in streams.items():
        try:
            heads[p] = await stream.__anext__()
        except StopAsyncIteration:
            pass
    while heads:
        producer = min(heads, key=lambda p: (heads[p].occurred_at, p))
        yield producer, heads[producer]
        try:
            heads[producer] = await streams[producer].__anext__()
        except StopAsyncIteration:
            del heads[producer]


class NoConsumerQueue(LookupError):
    """The consumer's queue is not on this broker, or (for a rebuild) nothing consumes it."""


async def _declared(channel: AbstractChannel, name: str) -> Any:
    """The broker's answer to a passive declaration of the queue (its counts now), on the
    protocol's channel: a robust channel answers one of a queue it declared before from
    memory, with the counts of that time."""
    underlay = await channel.get_underlay_channel()
    return await underlay.queue_declare(name, passive=True)


async def consumer_queue(
    channel: AbstractChannel, names: Names, consumer: str, consumed: bool = False
) -> str:
    """The consumer's queue, checked before anything is sent or emptied: the default exchange
    drops what it cannot route, and the broker still confirms it, so a replay to a queue that
    does not exist (another `RESELLIO_BROKER_PREFIX`, say) would report its events sent.
    `consumed`: something must also be consuming it (a rebuild waits for its events)."""
    name = names.queue(consumer)
    try:
        declared = await _declared(channel, name)
    except aio_pika.exceptions.ChannelNotFoundEntity as exc:
        raise NoConsumerQueue(
            f"no queue {name!r} on this broker: is RESELLIO_BROKER_PREFIX the deployment's,"
            f" and has {consumer} run?"
        ) from exc
    if consumed and not declared.consumer_count:
        raise NoConsumerQueue(f"nothing consumes {name!r}: start {consumer}, it applies them")
    return name


async def queue_depth(channel: AbstractChannel, names: Names, consumer: str) -> int:
    """Messages ready in the consumer's queue."""
    declared = await _declared(channel, names.queue(consumer))
    return int(declared.message_count or 0)


async def replay(
    engine: AsyncEngine,
    channel: AbstractChannel,
    names: Names,
    consumer: str,
    subscribed: list[str],
    filters: Filters,
    reprocess: bool = False,
    on_progress: Callable[[int], None] = lambda n: None,
    candidates: Sequence[str] = SERVICES,
) -> int:
    """Publish the selected events straight to the consumer's queue, with publisher confirms.

    Without `reprocess` the consumer's inbox recognises events it already handled, so a replay
    has no second effect; with it the consumer handles them again (after a bug fix).
    """
    types = _wanted(subscribed, filters)
    if not types:
        return 0
    producers = [
        p for p in await producers_with_log(engine, candidates) if filters.producer in (None, p)
    ]
    scoped = Filters(**{**filters.__dict__, "types": types})
    queue = await consumer_queue(channel, names, consumer)
    pending: list[tuple[asyncio.Future[Any], int]] = []
    sent = 0
    headers: dict[str, Any] = {"x-replay": True, "aggregate_id": f"replay:{consumer}"}
    if reprocess:
        headers["x-reprocess"] = True
    pack: list[bytes] = []
    first_id = ""

    async def confirmed() -> None:
        nonlocal pending, sent
        await asyncio.gather(*(future for future, _ in pending))
        n = sum(count for _, count in pending)
        sent += n
        on_progress(n)
        pending = []

    async for producer, row in _merged(engine, producers, scoped):
        if not pack:
            first_id = str(row.event_id)
        pack.append(envelope_bytes(row, producer, row.sequence))
        if len(pack) >= PACK:
            pending.append(_publish_pack(channel, queue, pack, first_id, headers))
            pack = []
            if len(pending) >= WINDOW:
                await confirmed()
    if pack:
        pending.append(_publish_pack(channel, queue, pack, first_id, headers))
    await confirmed()
    return sent


def _publish_pack(
    channel: AbstractChannel, queue: str, pack: list[bytes], first_id: str, headers: dict[str, Any]
) -> tuple[asyncio.Future[Any], int]:
    message = aio_pika.Message(
        relay.pack(pack),
        content_type=PACK_CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=f"pack:{first_id}",
        headers={**headers, "x-events": len(pack)},
    )
    publish = channel.default_exchange.publish(message, routing_key=queue)
    return asyncio.ensure_future(publish), len(pack)
