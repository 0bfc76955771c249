"""Operating a consumer's dead-letter queue: list, inspect, requeue, drop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.kernel.broker import Names, Unroutable, resend

# Headers a requeued letter keeps: what it was sent as (a replay's reprocess; a relay pack's
# aggregates, which it must apply in order with), not how it failed.
KEPT = frozenset({"x-reprocess", "x-aggregates", "x-events"})


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    type: str
    attempts: int
    error: str
    failed_at: str
    body: bytes
    headers: dict[str, Any]


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers)
    return DeadLetter(
        message_id=message.message_id or "",
        type=message.type or "",
        attempts=int(headers.get("x-attempts", 0) or 0),
        error=str(headers.get("x-last-error", "") or headers.get("x-first-death-reason", "")),
        failed_at=str(headers.get("x-failed-at", "")),
        body=message.body,
        headers=headers,
    )


async def _drain(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take every message (unacked), so the caller decides each one's fate."""
    queue = await channel.get_queue(queue_name, ensure=True)
    taken: list[AbstractIncomingMessage] = []
    while True:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return taken
        taken.append(message)


async def _put_back(
    channel: AbstractChannel, queue_name: str, message: AbstractIncomingMessage
) -> None:
    """Into the dead-letter queue again as it was (a new message, confirmed), then the one
    taken acknowledged. Not a requeue: that counts as a delivery, and a quorum queue drops a
    message past its delivery limit (20 by default from RabbitMQ 4.0), with nowhere further
    for a dead letter to go. Taken in order and put back in order, the letters keep theirs."""
    headers = {k: v for k, v in message.headers.items() if k != "x-delivery-count"}
    await resend(channel, message, queue_name, headers)
    await message.ack()


async def inspect(channel: AbstractChannel, names: Names, consumer: str) -> list[DeadLetter]:
    queue_name = names.dead_letter_queue(consumer)
    messages = await _drain(channel, queue_name)
    letters = [_describe(m) for m in messages]
    for m in messages:
        await _put_back(channel, queue_name, m)
    return letters


async def settle(
    channel: AbstractChannel,
    names: Names,
    consumer: str,
    chosen: Callable[[DeadLetter], bool],
    requeue: bool,
) -> int:
    """Requeue (to the consumer's queue, attempts reset) or drop the chosen dead letters."""
    queue_name = names.dead_letter_queue(consumer)
    messages = await _drain(channel, queue_name)
    done = 0
    for i, message in enumerate(messages):
        letter = _describe(message)
        try:
            if not chosen(letter):
                await _put_back(channel, queue_name, message)
                continue
            if requeue:
                # The failure's bookkeeping goes; a replay's reprocess stays one (its event
                # was handled before, and would be skipped as a duplicate).
                headers = {
                    k: v for k, v in letter.headers.items() if not k.startswith("x-") or k in KEPT
                }
                headers["x-requeued"] = True
                await resend(channel, message, names.queue(consumer), headers)
        except Unroutable:
            # The consumer's queue is gone: this letter and the ones not settled yet stay.
            for left in messages[i:]:
                await _put_back(channel, queue_name, left)
            raise
        await message.ack()
        done += 1
    return done
