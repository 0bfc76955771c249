"""RabbitMQ plumbing: one topic exchange, a durable queue per consuming service, retries, DLQ."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
)

log = logging.getLogger("resellio.broker")


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be reached."""


class Unroutable(Exception):
    """The broker sent a message back: the queue it was sent to does not exist."""


class TopologyMismatch(Exception):
    """A queue was declared earlier with other arguments (an older version's topology)."""


class Names:
    """Every broker name, derived from one prefix so test runs stay apart."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    def queue(self, consumer: str) -> str:
        return f"{self.prefix}.{consumer}"

    def retry_queue(self, consumer: str, delay_ms: int) -> str:
        return f"{self.prefix}.{consumer}.retry.{delay_ms}"

    def dead_letter_queue(self, consumer: str) -> str:
        return f"{self.prefix}.{consumer}.dlq"


async def connect(url: str) -> AbstractRobustConnection:
    try:
        return await aio_pika.connect_robust(
            url, timeout=5, client_properties={"connection_name": "resellio"}
        )
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
        raise BrokerUnavailable(str(exc)) from exc


async def declare_exchange(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)


# Safety net beside the consumer's own retries: a message whose handling kills the process
# again and again (so it is never acked) is dead-lettered by the broker after this many deliveries.
BROKER_DELIVERY_LIMIT = 20


def _queue_args(queue_type: str) -> dict[str, str | int]:
    return {"x-queue-type": queue_type}


def main_queue_args(names: Names, consumer: str, queue_type: str) -> dict[str, str | int | bool]:
    args: dict[str, str | int | bool] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.dead_letter_queue(consumer),
        # One instance of a service consumes at a time (the others are hot standbys that take
        # over when it goes away), so a service applies its events in publish order however
        # many instances run; inside that instance, aggregates are handled in parallel.
        "x-single-active-consumer": True,
    }
    if queue_type == "quorum":
        args["x-delivery-limit"] = BROKER_DELIVERY_LIMIT
    return args


async def declare_topology(
    channel: AbstractChannel,
    names: Names,
    subscriptions: Mapping[str, Iterable[str]],
    retry_delays_ms: Iterable[int],
    queue_type: str = "quorum",
) -> None:
    """Declare the exchange and, for each consumer, its queue, bindings, retry queues and DLQ.

    Every process declares the whole topology before it publishes, so no event is published
    before the queue of a consumer that needs it exists (nothing lost at start-up).
    """
    exchange = await declare_exchange(channel, names)
    for consumer, event_types in subscriptions.items():
        try:
            queue = await channel.declare_queue(
                names.queue(consumer),
                durable=True,
                arguments=main_queue_args(names, consumer, queue_type),
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyMismatch(
                f"queue {names.queue(consumer)} exists with other arguments ({exc}); let its "
                f"consumers drain it, then `rabbitmqctl delete_queue {names.queue(consumer)}` "
                "and start the service again (it declares the queue anew)"
            ) from exc
        for event_type in event_types:
            await queue.bind(exchange, routing_key=event_type)
        await channel.declare_queue(
            names.dead_letter_queue(consumer), durable=True, arguments=_queue_args(queue_type)
        )
        for delay in retry_delays_ms:
            # A parked message expires after `delay` and dead-letters back to the main queue.
            await channel.declare_queue(
                names.retry_queue(consumer, delay),
                durable=True,
                arguments={
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": names.queue(consumer),
                },
            )


async def delete_topology(
    channel: AbstractChannel,
    names: Names,
    consumers: Iterable[str],
    retry_delays_ms: Iterable[int],
) -> None:
    """Remove a test run's queues and exchange."""
    for consumer in consumers:
        for queue in [names.queue(consumer), names.dead_letter_queue(consumer)] + [
            names.retry_queue(consumer, d) for d in retry_delays_ms
        ]:
            await channel.queue_delete(queue)
    await channel.exchange_delete(names.exchange)


class Resendable(Protocol):
    """What resend() needs of a message: a received one, or one event out of a replay pack."""

    @property
    def body(self) -> bytes: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def headers(self) -> Any: ...


async def resend(
    channel: AbstractChannel, message: Resendable, queue: str, headers: dict[str, Any]
) -> None:
    """Publish a received message again, unchanged but for its headers, straight to `queue`
    (a retry queue, the dead-letter queue, or back to the consumer's queue). Unroutable if
    that queue does not exist (deleted to be declared anew, say): the caller keeps the message
    it took, instead of acknowledging one that went nowhere. The channel must have publisher
    confirms (every caller's has): without them the broker's answer is not waited for."""
    result = await channel.default_exchange.publish(
        aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            type=message.type,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
        ),
        routing_key=queue,
        mandatory=True,
    )
    if isinstance(result, aiormq.abc.DeliveredMessage):  # what the broker sent back
        raise Unroutable(f"no queue {queue!r}")
