"""Operating a consumer's dead-letter queue: list, inspect, requeue, drop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.kernel.broker import Names, resend


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


async def inspect(channel: AbstractChannel, names: Names, consumer: str) -> list[DeadLetter]:
    messages = await _drain(channel, names.dead_letter_queue(consumer))
    letters = [_describe(m) for m in messages]
    for m in messages:
        await m.nack(requeue=True)
    return letters


async def settle(
    channel: AbstractChannel,
    names: Names,
    consumer: str,
    chosen: Callable[[DeadLetter], bool],
    requeue: bool,
) -> int:
    """Requeue (to the consumer's queue, attempts reset) or drop the chosen dead letters."""
    messages = await _drain(channel, names.dead_letter_queue(consumer))
    done = 0
    for message in messages:
        letter = _describe(message)
        if not chosen(letter):
            await message.nack(requeue=True)
            continue
        if requeue:
            headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-")}
            headers["x-requeued"] = True
            await resend(channel, message, names.queue(consumer), headers)
        await message.ack()
        done += 1
    return done
