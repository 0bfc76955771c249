"""Keeps the deny-list current: auth's snapshot, then auth's events from the bus.

Each gateway instance has its own exclusive, auto-delete queue (every instance must see every
event; a restarted instance starts from a fresh snapshot, so nothing durable is needed). Events
that arrive while a snapshot is loading are applied at once and re-applied on top of the
snapshot, so none is lost between the snapshot and the stream. After a broker reconnect
(events may have been missed meanwhile) the snapshot is loaded again.

Until the first snapshot arrives the gateway answers requests without a token, and a request
with one 503 (gateway/edge.py): a banned or revoked token must not pass for want of the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts.codec import decode_envelope, decode_payload
from gateway.denylist import DenyList, Snapshot
from services.kernel import broker
from services.kernel.relay import PACK_CONTENT_TYPE, unpack
from services.kernel.upstream import UpstreamError, Upstreams
from services.topology import GATEWAY_FOLLOWS

log = logging.getLogger("resellio.gateway")


class DenyListFollower:
    def __init__(
        self,
        denylist: DenyList,
        upstreams: Upstreams,
        amqp_url: str,
        names: broker.Names,
    ) -> None:
        self.denylist = denylist
        self.upstreams = upstreams
        self.amqp_url = amqp_url
        self.names = names
        self.connection: AbstractRobustConnection | None = None
        self._loading = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, startup_wait_s: float) -> None:
        """Subscribe, then load the snapshot; waits at most about `startup_wait_s`."""
        deadline = time.monotonic() + startup_wait_s
        try:
            await asyncio.wait_for(self._subscribe(), timeout=max(startup_wait_s, 1.0))
        except Exception as exc:
            log.warning("gateway: broker unavailable (%s); deny-list events will follow", exc)
            self._spawn(self._subscribe_until_done())
        if not await self._load(deadline):
            self._spawn(self._load(None))

    async def refresh(self, timeout_s: float) -> None:
        """Load auth's deny-list now, waiting at most `timeout_s` (a write that revokes tokens
        auth alone can name was just answered; its event follows anyway)."""
        try:
            await asyncio.wait_for(self._load(time.monotonic() + timeout_s), timeout_s)
        except TimeoutError:
            log.warning(
                "gateway: deny-list not refreshed in %.1f s; auth's event will tell", timeout_s
            )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self) -> None:
        self.connection = await broker.connect(self.amqp_url)
        self.connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await self.connection.channel()
        exchange = await broker.declare_exchange(channel, self.names)
        queue = await channel.declare_queue(
            f"{self.names.prefix}.gateway.{uuid.uuid4().hex[:12]}", exclusive=True, auto_delete=True
        )
        for event_type in GATEWAY_FOLLOWS:
            await queue.bind(exchange, routing_key=event_type.TYPE)
        await queue.consume(self._on_message, no_ack=True)

    async def _subscribe_until_done(self) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await self._subscribe()
            except Exception as exc:
                log.warning("gateway: broker still unavailable (%s)", exc)
                delay = min(delay * 2, 10.0)
                continue
            await self._load(None)  # events may have been missed until now
            return

    def _on_reconnect(self, *_: Any) -> None:
        log.info("gateway: broker reconnected, reloading the deny-list")
        self._spawn(self._load(None))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            if message.content_type == PACK_CONTENT_TYPE:  # the relay's run of several events
                bodies = unpack(message.body)
            else:
                bodies = [message.body]
            events = [decode_payload(decode_envelope(body)) for body in bodies]
        except Exception:
            log.exception("gateway: undecodable event %s", message.routing_key)
            return
        for event in events:
            self.denylist.apply(event)

    async def _load(self, deadline: float | None) -> bool:
        """Fetch the snapshot, retrying until it comes or `deadline` passes (None: forever)."""
        async with self._loading:
            self.denylist.loading()
            delay = 0.1
            try:
                while True:
                    try:
                        snapshot = await self.upstreams.get_json(
                            "auth", "/internal/denylist", 5.0, Snapshot
                        )
                    except UpstreamError as exc:
                        # 404: auth runs but has no deny-list endpoint; waiting will not help
                        # start-up (the background retry keeps asking).
                        gone = exc.status == 404
                        if deadline is not None and (gone or time.monotonic() + delay > deadline):
                            log.warning("gateway: no deny-list from auth yet (%s)", exc)
                            return False
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    self.denylist.load(snapshot)  # and the changes made meanwhile again
                    log.info("gateway: deny-list loaded (%d banned)", len(self.denylist.banned))
                    return True
            finally:
                self.denylist.not_loading()  # (a load has ended it already)
