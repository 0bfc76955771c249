"""The outbox relay: publishes committed events with publisher confirms, then marks them."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from aiormq.abc import DeliveredMessage

from contracts.timeutil import utcnow
from services.kernel import metrics
from services.kernel.db import Database
from services.kernel.notifications import Notifications
from services.kernel.settings import Settings
from services.topology import GATEWAY_FOLLOWS

log = logging.getLogger("resellio.relay")

# One relay per service publishes at a time, whatever the number of instances.
_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"
# Run under the advisory lock (a statement of its own, so this one's snapshot is taken after
# it): the batch, and the last sequence any relay gave out, in one round trip.
_CLAIM = """
SELECT id, event_id, type, version, occurred_at, aggregate_id, correlation_id, causation_id,
       payload::text AS payload,
       (SELECT coalesce(max(sequence), 0) FROM "{schema}".outbox) AS last_sequence
FROM "{schema}".outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
# When the broker confirmed the batch (not when its transaction began): a consumer's catch-up
# waits for what was published a moment ago (/internal/events/head).
_MARK = """
UPDATE "{schema}".outbox AS o SET sequence = v.seq, published_at = clock_timestamp()
FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE o.id = v.id
"""


# How long a type no consumer subscribes to, returned by the broker for want of any queue, is
# not sent before the relay tries again: a queue bound to it (an operator's, or a consumer new in
# a rolling deploy while an older relay publishes) gets its events from at most this long after
# it is bound; what came before, as before any queue existed, from a replay of the event log.
UNBOUND_RECHECK_S = 1.0
# Several events in one message: a JSON array of envelopes, applied by a consumer in one
# transaction (the relay's runs of one type, a replay's packs).
PACK_CONTENT_TYPE = "application/vnd.resellio.events+json"


def pack(envelopes: Sequence[bytes]) -> bytes:
    """A pack's body: the envelopes, each embedded as it is, in order."""
    return b"[" + b",".join(envelopes) + b"]"


def unpack(body: bytes) -> list[bytes]:
    """The envelopes of a pack, each as it was published (msgspec.DecodeError if it is not one)."""
    import msgspec

    return [bytes(raw) for raw in msgspec.json.decode(body, type=list[msgspec.Raw])]


def consumed_types(topology: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """The event types some consumer of the topology, or the gateway, subscribes to."""
    followed = (event.TYPE for event in GATEWAY_FOLLOWS)
    return frozenset(t for types in topology.values() for t in types) | frozenset(followed)


def envelope_bytes(row: Any, producer: str, sequence: int) -> bytes:
    """The wire form of an outbox row; the stored payload is embedded as it is."""
    import msgspec

    from contracts.codec import encode
    from contracts.envelope import Envelope

    return encode(
        Envelope(
            id=row.event_id,
            type=row.type,
            version=row.version,
            occurred_at=row.occurred_at,
            producer=producer,
            aggregate_id=row.aggregate_id,
            sequence=sequence,
            correlation_id=row.correlation_id,
            causation_id=row.causation_id,
            payload=msgspec.Raw(row.payload.encode()),
        )
    )


class Relay:
    """One per service process. Several instances share the outbox: a transaction-scoped
    advisory lock lets one publish at a time (so sequences stay gap-free and in order), and
    rows are claimed FOR UPDATE SKIP LOCKED."""

    def __init__(
        self,
        db: Database,
        exchange_factory: Callable[[], Awaitable[AbstractExchange]],
        producer: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        consumed: frozenset[str] | None = None,
        notifications: Notifications | None = None,
        batch_interval: float = 0.0,
    ) -> None:
        self.db = db
        # The event types some consumer of the topology subscribes to (None: any may be).
        self.consumed = consumed
        self.producer = producer
        self.exchange_factory = exchange_factory
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # The least time from one batch to the next while events keep coming: under load the
        # events of that moment go in one batch (one transaction, fewer and larger messages,
        # a consumer's pack applied in one transaction) instead of a batch per commit; an
        # event after a quiet moment goes at once.
        self.batch_interval = batch_interval
        self._last_batch = -batch_interval
        # Types no consumer subscribes to that the broker returned for want of any queue, and
        # until when they are not sent (a queue an operator binds gets them from then on).
        self.unbound_recheck_s = UNBOUND_RECHECK_S
        self._unbound_until: dict[str, float] = {}
        self._claim = _CLAIM.format(schema=db.schema)
        self._mark = _MARK.format(schema=db.schema)
        self._wake = asyncio.Event()
        # Test hook: called after the broker confirmed a batch, before the rows are marked.
        self.after_publish: Callable[[list[Any]], Awaitable[None]] | None = None
        # Commits of this process wake it directly; those of other instances by NOTIFY.
        db.on_events_committed = self.wake
        if notifications is not None:
            notifications.subscribe(db.notify_channel, self.wake)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                published = await self.publish_batch()
                backoff = 0.2
                if published == self.batch_size:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker or database is away: retry with back-off
                log.warning("relay failed, retrying in %.1fs: %s", backoff, exc)
                self._wake.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            await self._pace()
            self._wake.clear()  # what committed until now goes in the next batch

    async def publish_batch(self) -> int:
        async with self.db.driver() as db, db.transaction():
            if not await db.fetchval(_LOCK, f"relay:{self.db.schema}"):
                return 0
            rows = await db.fetch(self._claim, self.batch_size)
            if not rows:
                metrics.outbox_backlog.labels(self.producer).set(0)
                return 0
            last = rows[0].last_sequence
            sequences = list(range(last + 1, last + 1 + len(rows)))
            exchange = await self.exchange_factory()
            # Events of a type held back are not sent; the runs are cut from the others, so the
            # events on either side of a held-back one can travel in one pack (a drop's
            # TicketPurchased, one per checkout, between each checkout's other events).
            now = time.monotonic()
            held_back = {row.id for row in rows if self._held_back(row.type, now)}
            pairs = zip(rows, sequences, strict=True)
            runs = _runs([(r, seq) for r, seq in pairs if r.id not in held_back])
            if runs:  # a batch of types nobody consumes sends nothing: it sets no pace
                self._last_batch = now
            returned = await asyncio.gather(*(self._publish(exchange, run) for run in runs))
            unroutable = held_back | {
                r.id for run, back in zip(runs, returned, strict=True) if back for r, _ in run
            }
            if self.after_publish is not None:
                await self.after_publish(rows)
            await db.fetchval(self._mark, [row.id for row in rows], sequences)
        published_at = utcnow()
        for row in rows:
            metrics.publish_latency.labels(self.producer).observe(
                (published_at - row.occurred_at).total_seconds()
            )
            if row.id in unroutable:
                metrics.outbox_unroutable.labels(self.producer, row.type).inc()
        metrics.outbox_published.labels(self.producer).inc(len(rows))
        return len(rows)

    async def _pace(self) -> None:
        """Wait out what is left of `batch_interval` since the last batch that sent messages."""
        wait = self._last_batch + self.batch_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _held_back(self, event_type: str, now: float) -> bool:
        """A type no consumer subscribes to that the broker returned a moment ago (only such
        types are ever noted in `_unbound_until`)."""
        return self._unbound_until.get(event_type, 0.0) > now

    async def _publish(self, exchange: AbstractExchange, run: list[tuple[Any, int]]) -> bool:
        """One message for a run of events of one type: the event itself, or a pack of them
        (in order) when there are several; True when the broker found no queue for it."""
        row = run[0][0]
        if len(run) == 1:
            body = envelope_bytes(row, self.producer, run[0][1])
            kind: dict[str, Any] = {
                "content_type": "application/json",
                "message_id": str(row.event_id),
                "correlation_id": row.correlation_id,
                "headers": {"producer": self.producer, "aggregate_id": row.aggregate_id},
            }
        else:
            body = pack([envelope_bytes(r, self.producer, seq) for r, seq in run])
            kind = {
                "content_type": PACK_CONTENT_TYPE,
                "message_id": f"pack:{row.event_id}",
                "headers": {
                    "producer": self.producer,
                    "x-events": len(run),
                    # What a consumer must not apply out of order with other messages.
                    "x-aggregates": sorted({r.aggregate_id for r, _ in run}),
                },
            }
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=row.type,
            timestamp=row.occurred_at,
            **kind,
        )
        result = await exchange.publish(message, routing_key=row.type, mandatory=True, timeout=10)
        # A returned message had no queue bound for its type: it stays in the event log for
        # replay, so it is marked published rather than blocking the outbox.
        returned = isinstance(result, DeliveredMessage)  # what the broker sent back
        if returned and self.consumed is not None and row.type not in self.consumed:
            # A type nobody consumes (HoldPlaced, OrderCompleted, ...) with no queue an operator
            # bound: not sent for a while (most of a checkout's messages would be such).
            self._unbound_until[row.type] = time.monotonic() + self.unbound_recheck_s
        return returned


def _runs(batch: list[tuple[Any, int]]) -> list[list[tuple[Any, int]]]:
    """The (row, sequence) pairs to send cut into runs of consecutive events of one type (a
    checkout's TicketPurchased events, a burst of one kind): each run is one message, and the
    runs keep the batch's order, so no consumer sees an aggregate's events out of order."""
    runs: list[list[tuple[Any, int]]] = []
    for row, seq in batch:
        if runs and runs[-1][0][0].type == row.type:
            runs[-1].append((row, seq))
        else:
            runs.append([(row, seq)])
    return runs


async def run_apart(settings: Settings, services: Sequence[str], queue_type: str) -> None:
    """`resellio relay`: the relays of these services in a process of their own, each with its
    own pool, broker channel and LISTEN connection, for services started with
    RESELLIO_RELAY=external. Publishing then never waits behind a busy service's requests
    (nor the requests behind it). Any number may run: the advisory lock lets one publish a
    service's outbox at a time, and a relay that stops leaves its events in the outbox for the
    next one."""
    from services.kernel import broker
    from services.topology import subscriptions

    topology = subscriptions()
    consumed = consumed_types(topology)
    names = broker.Names(settings.broker_prefix)
    connection = await broker.connect(settings.amqp_url)
    databases: list[Database] = []
    try:
        await broker.declare_topology(
            await connection.channel(),
            names,
            topology,
            settings.consumer_retry_delays_ms,
            queue_type,
        )
        tasks = []
        for service in services:
            # A channel of its own per relay: its confirms wait for no other service's.
            channel = await connection.channel(publisher_confirms=True)
            exchange = await broker.declare_exchange(channel, names)

            async def exchange_of(found: AbstractExchange = exchange) -> AbstractExchange:
                return found

            metadata = importlib.import_module(f"services.{service}.models").metadata
            db = Database(settings.database_url_for(service), service, metadata, pool_size=2)
            databases.append(db)
            notifications = Notifications(db)
            relay = Relay(
                db,
                exchange_of,
                service,
                consumed=consumed,
                notifications=notifications,
                batch_interval=settings.relay_batch_interval_ms / 1000,
            )
            tasks += [notifications.run(), relay.run()]
        log.info("relaying the outboxes of %s", ", ".join(services))
        await asyncio.gather(*tasks)
    finally:
        await connection.close()
        for db in databases:
            await db.dispose()
