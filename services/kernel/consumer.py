"""Consumers: one durable queue per service, an inbox for exactly-once effects,
bounded retries with back-off, then the dead-letter queue.

Deliveries wait in one line. Whenever one of the `concurrency` slots is free, everything
waiting (up to `batch_size`) is applied in one transaction (one inbox insert, the handlers in
order, one commit, then the acks), skipping any message whose aggregate is still being
handled by another batch, and every later message of that aggregate (so each aggregate's
events apply in delivery order). At a trickle a batch is one event; under load the slots stay
busy, the line grows, and the per-event cost becomes the handler's own statements rather than
a transaction each (group commit). If anything in a batch fails, it is rolled back and its
messages are handled again one by one, so a failing event is retried and dead-lettered on its
own exactly as before."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from contracts.codec import decode_envelope, decode_payload
from contracts.envelope import Envelope, Event
from contracts.timeutil import utcnow
from services.kernel import context, metrics
from services.kernel.broker import Names, Resendable, resend
from services.kernel.db import Database, DatabaseUnavailable, UnitOfWork
from services.kernel.relay import PACK_CONTENT_TYPE, unpack

log = logging.getLogger("resellio.consumer")
# The first and the longest wait before handling an event again while the database is away.
DATABASE_RETRY_S = (0.5, 5.0)

Handler = Callable[[Any, Envelope, UnitOfWork], Awaitable[None]]
# Applies a run of consecutive events of one type at once (a replay, a burst of purchases).
BulkHandler = Callable[[list[tuple[Any, Envelope]], UnitOfWork], Awaitable[None]]


def bulk(apply_many: BulkHandler) -> Handler:
    """A handler that a batch can call once for a run of its events instead of once each.
    Only for projections: it writes its own rows in event order and emits nothing."""

    async def one(payload: Any, envelope: Envelope, uow: UnitOfWork) -> None:
        await apply_many([(payload, envelope)], uow)

    one.many = apply_many  # type: ignore[attr-defined]
    one.__name__ = one.__qualname__ = apply_many.__name__
    return one


def last_per_key(
    items: list[tuple[Any, Envelope]], key: Callable[[Any], object]
) -> list[tuple[Any, Envelope]]:
    """The newest event (by its producer's sequence) per key: what a run of upserts guarded by
    sequence leaves behind (one statement may not upsert the same row twice)."""
    latest: dict[object, tuple[Any, Envelope]] = {}
    for payload, envelope in items:
        seen = latest.get(key(payload))
        if seen is None or seen[1].sequence < envelope.sequence:
            latest[key(payload)] = (payload, envelope)
    return list(latest.values())


class Consumer:
    """Feeds a service's queue into its handlers. Messages of one aggregate are handled in
    order by the same worker; different aggregates are handled concurrently."""

    def __init__(
        self,
        name: str,
        db: Database,
        names: Names,
        handlers: Mapping[str, Handler],
        retry_delays_ms: tuple[int, ...],
        concurrency: int = 8,
        batch_size: int = 64,
    ) -> None:
        self.name = name
        self.db = db
        self.names = names
        self.handlers = dict(handlers)
        self.retry_delays_ms = retry_delays_ms
        self.concurrency = concurrency
        self.batch_size = batch_size
        self._waiting: deque[AbstractIncomingMessage] = deque()
        self._arrived = asyncio.Event()  # a delivery joined the line, or a batch finished
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: set[str] = set()  # aggregates some running batch holds
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None
        insert = (
            f'INSERT INTO "{db.schema}".inbox (event_id, producer, type, sequence) '
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[]) "
            "ON CONFLICT (event_id) {} RETURNING event_id"
        )
        self._record_sql = {
            False: insert.format("DO NOTHING"),
            # A reprocessing applies the event again, and counts it.
            True: insert.format(
                "DO UPDATE SET handled_count = inbox.handled_count + 1, handled_at = now()"
            ),
        }

    async def start(self, channel: AbstractChannel) -> None:
        self._channel = channel
        # Enough in flight for every slot to fill a batch while the previous one commits.
        await channel.set_qos(prefetch_count=self.concurrency * max(8, self.batch_size // 2))
        self._tasks.add(asyncio.create_task(self._feed()))
        queue = await channel.get_queue(self.names.queue(self.name), ensure=True)
        await queue.consume(self._dispatch)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        self._waiting.append(message)
        self._arrived.set()

    async def _feed(self) -> None:
        """Start a batch of what is waiting whenever a slot is free."""
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            task = asyncio.create_task(self._settle(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next_batch(self) -> list[tuple[frozenset[str], AbstractIncomingMessage]]:
        while True:
            if self._waiting:
                # Deliveries that arrived in the same read are dispatched by tasks of their
                # own: one turn of the loop lets them join this batch.
                await asyncio.sleep(0)
                batch = self._take()
                if batch:
                    return batch
            self._arrived.clear()
            await self._arrived.wait()

    def _take(self) -> list[tuple[frozenset[str], AbstractIncomingMessage]]:
        """The waiting messages a batch may take now, in order: not past `batch_size`, none of
        an aggregate another batch holds, nor any after a message left behind for that (two of
        one aggregate may share this batch: it applies them in order)."""
        taken: list[tuple[frozenset[str], AbstractIncomingMessage]] = []
        left: deque[AbstractIncomingMessage] = deque()
        held = self._busy
        skipped: set[str] = set()
        for message in self._waiting:
            keys = _keys(message)
            if (
                len(taken) >= self.batch_size
                or not held.isdisjoint(keys)
                or not skipped.isdisjoint(keys)
            ):
                skipped.update(keys)
                left.append(message)
            else:
                taken.append((keys, message))
        self._waiting = left
        for keys, _ in taken:
            held.update(keys)
        return taken

    async def _settle(self, batch: list[tuple[frozenset[str], AbstractIncomingMessage]]) -> None:
        messages = [message for _, message in batch]
        try:
            if len(messages) == 1 or not await self._process_batch(messages):
                for message in messages:
                    await self._process(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one message stop the consumer
            log.exception("consumer %s could not settle a message", self.name)
        finally:
            for keys, _ in batch:
                self._busy.difference_update(keys)
            self._slots.release()
            self._arrived.set()  # what waited for these aggregates may go now

    async def _process_batch(self, messages: list[AbstractIncomingMessage]) -> bool:
        """Apply the messages' events (a pack's all of them) in one transaction and ack them;
        False (nothing applied, nothing acked) when they must go one by one: a redelivery with
        its own retry count, a reprocessing, an undecodable pack, or any failure."""
        if any(m.headers.get("x-attempts") or m.headers.get("x-reprocess") for m in messages):
            return False
        bodies: list[bytes] = []
        for m in messages:
            if m.content_type != PACK_CONTENT_TYPE:
                bodies.append(m.body)
                continue
            try:
                bodies += unpack(m.body)
            except msgspec.DecodeError:
                return False
        if not await self._apply_batch(bodies, reprocess=False):
            return False
        for message in messages:
            await message.ack()
        return True

    async def _apply_batch(self, bodies: list[bytes], reprocess: bool) -> bool:
        """Apply the events in one transaction; False when anything failed (all rolled back)."""
        try:
            envelopes = [decode_envelope(body) for body in bodies]
            if any(e.type not in self.handlers for e in envelopes):
                return False
            payloads: list[Event] = [decode_payload(e) for e in envelopes]
        except Exception:
            return False
        started = time.perf_counter()
        try:
            async with self.db.unit_of_work() as uow:
                uow.commit_allowed = False  # a handler's own commit would split the batch
                fresh = await self._record_many(uow, envelopes, reprocess)
                todo: list[tuple[Any, Envelope]] = []
                duplicates: list[bool] = []  # per envelope, for the metrics
                for envelope, payload in zip(envelopes, payloads, strict=True):
                    duplicates.append(envelope.id not in fresh)
                    if envelope.id in fresh:
                        fresh.discard(envelope.id)  # the same event twice in one batch: once
                        todo.append((payload, envelope))
                await self._apply_in_order(todo, uow)
                uow.commit_allowed = True
                await uow.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch of %d failed (%r); handling one by one", len(bodies), exc)
            return False
        self._count(envelopes, duplicates, (time.perf_counter() - started) / len(bodies))
        return True

    def _count(
        self, envelopes: list[Envelope], duplicates: list[bool], seconds_each: float
    ) -> None:
        """`duplicates`: for each envelope, whether it was skipped as one (handled before, or
        a copy of one earlier in its batch)."""
        now = utcnow()
        for envelope, duplicate in zip(envelopes, duplicates, strict=True):
            if duplicate:
                metrics.events_handled.labels(self.name, envelope.type, "duplicate").inc()
                continue
            metrics.events_handled.labels(self.name, envelope.type, "ok").inc()
            metrics.event_handle_seconds.labels(self.name, envelope.type).observe(seconds_each)
            metrics.consumer_lag.labels(self.name).observe(
                (now - envelope.occurred_at).total_seconds()
            )

    async def _process_pack(self, message: AbstractIncomingMessage) -> None:
        """A pack of events (the relay's run, a replay's): all in one transaction, or else one
        by one in order, each failing event parked on its own for retry (the others are not
        held back)."""
        reprocess = bool(message.headers.get("x-reprocess"))
        try:
            bodies = unpack(message.body)
        except msgspec.DecodeError as exc:
            await self._park(message, _attempt(message), exc)
            await message.ack()
            return
        if not await self._apply_batch(bodies, reprocess):
            for body in bodies:
                try:
                    await self._handle_held(body, reprocess)
                except Exception as exc:
                    log.warning("handling a replayed event failed: %r", exc, exc_info=True)
                    await self._park(_unpacked(message, body), 1, exc)
        await message.ack()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        if message.content_type == PACK_CONTENT_TYPE:
            await self._process_pack(message)
            return
        attempts = _attempt(message)
        reprocess = bool(message.headers.get("x-reprocess"))
        try:
            await self._handle_held(message.body, reprocess)
        except Exception as exc:
            log.warning("handling failed (attempt %d): %r", attempts, exc, exc_info=True)
            await self._park(message, attempts, exc)
        await message.ack()

    async def _handle_held(self, body: bytes, reprocess: bool) -> None:
        """Handle the event; while the database is unavailable, wait and try again, the message
        held (not acked). That is not the message's fault, so it spends no attempt, nor a
        delivery: a requeue counts against the quorum queue's delivery limit, and a long
        enough outage would dead-letter live events. Every slot waiting so, consumption waits."""
        delay = DATABASE_RETRY_S[0]
        while True:
            try:
                await self.handle(body, reprocess=reprocess)
                return
            except DatabaseUnavailable as exc:
                log.warning(
                    "database unavailable while handling, retrying in %.1f s: %s", delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, DATABASE_RETRY_S[1])

    async def handle(self, body: bytes, reprocess: bool = False) -> bool:
        """Apply one event; False when it had been handled already (no second effect)."""
        envelope = decode_envelope(body)
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise LookupError(f"{self.name} has no handler for {envelope.type}")
        payload: Event = decode_payload(envelope)
        started = time.perf_counter()
        with _caused_by(envelope):
            async with self.db.unit_of_work() as uow:
                fresh = await self._record_many(uow, [envelope], reprocess)
                if fresh:  # a handler of one event may commit itself
                    await handler(payload, envelope, uow)
                    if not uow.committed:
                        await uow.commit()
        self._count([envelope], [envelope.id not in fresh], time.perf_counter() - started)
        return bool(fresh)

    async def _apply_in_order(self, todo: list[tuple[Any, Envelope]], uow: UnitOfWork) -> None:
        """Each event's handler in turn; a run of events whose handler is `bulk` in one call."""
        i = 0
        while i < len(todo):
            payload, envelope = todo[i]
            handler = self.handlers[envelope.type]
            many: BulkHandler | None = getattr(handler, "many", None)
            end = i + 1
            if many is not None:
                while end < len(todo) and self.handlers[todo[end][1].type] is handler:
                    end += 1
            with _caused_by(envelope):
                if many is not None and end - i > 1:
                    await many(todo[i:end], uow)
                else:
                    await handler(payload, envelope, uow)
            i = end

    async def _record_many(
        self, uow: UnitOfWork, envelopes: list[Envelope], reprocess: bool
    ) -> set[Any]:
        """Insert the events into the inbox at once (one statement whatever their number);
        the ids to handle (with `reprocess`, all of them, counted again)."""
        rows = await uow.fetch(
            self._record_sql[reprocess],
            [e.id for e in envelopes],
            [e.producer for e in envelopes],
            [e.type for e in envelopes],
            [e.sequence for e in envelopes],
        )
        return {row[0] for row in rows}

    async def _park(self, message: Resendable, attempts: int, exc: Exception) -> None:
        """Send a failed message to the next retry queue, or to the DLQ when attempts run out."""
        assert self._channel is not None
        headers = dict(message.headers)
        headers.update(
            {
                "x-attempts": attempts,
                "x-last-error": f"{type(exc).__name__}: {exc}"[:2000],
                "x-failed-at": utcnow().isoformat(),
                "x-consumer": self.name,
                "x-original-routing-key": headers.get("x-original-routing-key")
                or message.routing_key,
            }
        )
        if attempts <= len(self.retry_delays_ms):
            target = self.names.retry_queue(self.name, self.retry_delays_ms[attempts - 1])
            outcome = "retry"
        else:
            target = self.names.dead_letter_queue(self.name)
            outcome = "dead_lettered"
        metrics.events_handled.labels(self.name, message.type or "?", outcome).inc()
        await resend(self._channel, message, target, headers)


def _keys(message: AbstractIncomingMessage) -> frozenset[str]:
    """The aggregates whose events the message holds, which must apply in order: a pack from
    the relay lists them; an event or a replay's pack names one."""
    listed = message.headers.get("x-aggregates")
    if isinstance(listed, list | tuple):
        return frozenset(str(a) for a in listed)
    return frozenset((str(message.headers.get("aggregate_id") or message.message_id or ""),))


def _attempt(message: AbstractIncomingMessage) -> int:
    """Which attempt at handling this delivery is (1 for the first)."""
    return int(message.headers.get("x-attempts", 0) or 0) + 1  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Unpacked:
    """One event taken out of a replay pack, to be retried (or dead-lettered) on its own."""

    body: bytes
    headers: dict[str, Any]
    routing_key: str | None
    message_id: str | None
    type: str | None
    correlation_id: str | None
    content_type: str = "application/json"
    timestamp: datetime | None = None


def _unpacked(pack: AbstractIncomingMessage, body: bytes) -> _Unpacked:
    """One event of a pack as a message of its own; one whose envelope does not decode is
    parked with the pack's own names (it must not stop the pack's other events)."""
    headers = {k: v for k, v in pack.headers.items() if k not in ("x-events", "x-aggregates")}
    try:
        envelope = decode_envelope(body)
    except msgspec.DecodeError:
        return _Unpacked(body, headers, pack.routing_key, None, pack.type, pack.correlation_id)
    headers.update({"producer": envelope.producer, "aggregate_id": envelope.aggregate_id})
    return _Unpacked(
        body=body,
        headers=headers,
        routing_key=pack.routing_key,
        message_id=str(envelope.id),
        type=envelope.type,
        correlation_id=envelope.correlation_id,
    )


@contextmanager
def _caused_by(envelope: Envelope) -> Iterator[None]:
    """What a handler writes or logs carries the event's correlation id, and the event as its
    cause."""
    corr = context.correlation_id.set(envelope.correlation_id)
    cause = context.causation_id.set(str(envelope.id))
    try:
        yield
    finally:
        context.correlation_id.reset(corr)
        context.causation_id.reset(cause)
