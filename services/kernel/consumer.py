"""Consumers: one durable queue per service, an inbox for exactly-once effects,
bounded retries with back-off, then the dead-letter queue."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from sqlalchemy.dialects.postgresql import insert

from contracts.codec import decode_envelope, decode_payload
from contracts.envelope import Envelope, Event
from contracts.timeutil import utcnow
from services.kernel import context, metrics
from services.kernel.broker import Names, resend
from services.kernel.db import Database, DatabaseUnavailable, UnitOfWork

log = logging.getLogger("resellio.consumer")

Handler = Callable[[Any, Envelope, UnitOfWork], Awaitable[None]]


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
    ) -> None:
        self.name = name
        self.db = db
        self.names = names
        self.handlers = dict(handlers)
        self.retry_delays_ms = retry_delays_ms
        self.concurrency = concurrency
        self._workers: list[asyncio.Queue[AbstractIncomingMessage]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: AbstractChannel | None = None

    async def start(self, channel: AbstractChannel) -> None:
        self._channel = channel
        await channel.set_qos(prefetch_count=self.concurrency * 8)
        self._workers = [asyncio.Queue() for _ in range(self.concurrency)]
        self._tasks = [asyncio.create_task(self._work(q)) for q in self._workers]
        queue = await channel.get_queue(self.names.queue(self.name), ensure=True)
        await queue.consume(self._dispatch)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        key = message.headers.get("aggregate_id") or message.message_id or ""
        self._workers[hash(key) % len(self._workers)].put_nowait(message)

    async def _work(self, queue: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while True:
            message = await queue.get()
            try:
                await self._process(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one message stop the worker
                log.exception("consumer %s could not settle a message", self.name)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        attempts = int(message.headers.get("x-attempts", 0) or 0) + 1
        reprocess = bool(message.headers.get("x-reprocess"))
        try:
            await self.handle(message.body, reprocess=reprocess)
        except DatabaseUnavailable as exc:
            # Not the message's fault: put it back without spending an attempt.
            log.warning("database unavailable while handling, requeueing: %s", exc)
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return
        except Exception as exc:
            log.warning("handling failed (attempt %d): %r", attempts, exc, exc_info=True)
            await self._park(message, attempts, exc)
        await message.ack()

    async def handle(self, body: bytes, reprocess: bool = False) -> bool:
        """Apply one event; False when it had been handled already (no second effect)."""
        envelope = decode_envelope(body)
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise LookupError(f"{self.name} has no handler for {envelope.type}")
        payload: Event = decode_payload(envelope)
        started = time.perf_counter()
        corr = context.correlation_id.set(envelope.correlation_id)
        cause = context.causation_id.set(str(envelope.id))
        try:
            async with self.db.unit_of_work() as uow:
                if not await self._record(uow, envelope, reprocess):
                    metrics.events_handled.labels(self.name, envelope.type, "duplicate").inc()
                    return False
                await handler(payload, envelope, uow)
                if not uow.committed:
                    await uow.commit()
        finally:
            context.correlation_id.reset(corr)
            context.causation_id.reset(cause)
        metrics.events_handled.labels(self.name, envelope.type, "ok").inc()
        metrics.event_handle_seconds.labels(self.name, envelope.type).observe(
            time.perf_counter() - started
        )
        metrics.consumer_lag.labels(self.name).observe(
            (utcnow() - envelope.occurred_at).total_seconds()
        )
        return True

    async def _record(self, uow: UnitOfWork, envelope: Envelope, reprocess: bool) -> bool:
        inbox = self.db.inbox
        stmt = insert(inbox).values(
            event_id=envelope.id,
            producer=envelope.producer,
            type=envelope.type,
            sequence=envelope.sequence,
        )
        if reprocess:
            stmt = stmt.on_conflict_do_update(
                index_elements=[inbox.c.event_id],
                set_={"handled_count": inbox.c.handled_count + 1, "handled_at": utcnow()},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=[inbox.c.event_id])
        result = await uow.execute(stmt.returning(inbox.c.event_id))
        return result.first() is not None

    async def _park(self, message: AbstractIncomingMessage, attempts: int, exc: Exception) -> None:
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
