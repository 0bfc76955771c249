"""The messaging kernel against the real PostgreSQL and RabbitMQ: outbox, relay, inbox, DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import QueueEmpty
from msgspec import Raw, json
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, func, select
from sqlalchemy.dialects.postgresql import insert

from contracts.codec import decode_envelope
from contracts.envelope import Envelope, Event, register
from services.kernel import broker, deadletters, metrics
from services.kernel.consumer import Consumer
from services.kernel.db import Database, UnitOfWork
from services.kernel.relay import PACK_CONTENT_TYPE, Relay, pack, unpack
from tests.integration.conftest import Bus, drop_schema
from tests.integration.test_ordering_reactions import envelope
from tests.support.shop import eventually


class NoteAdded(Event, frozen=True):
    TYPE: ClassVar[str] = "ktest.NoteAdded"
    note_id: int
    text: str


register(NoteAdded)
DELAYS = (50, 100)


def note_tables(schema: str) -> tuple[MetaData, Table, Table]:
    metadata = MetaData(schema=schema)
    notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", Text))
    applied = Table(
        "applied",
        metadata,
        Column("note_id", Integer, primary_key=True),
        Column("times", Integer),
        Column("seq", BigInteger),  # the sequence of the event that wrote the row, if kept
    )
    return metadata, notes, applied


class Harness:
    """One producer schema with a relay, one consumer schema with a consumer."""

    def __init__(
        self,
        url: str,
        schema: str,
        bus: Bus,
        fail_always: bool = False,
        poison: frozenset[int] = frozenset(),
        commits_itself: bool = False,
        queue_type: str = "classic",
    ) -> None:
        self.bus = bus
        self.queue_type = queue_type
        self.fail_always = fail_always
        self.poison = poison
        self.commits_itself = commits_itself
        self.pmeta, self.notes, _ = note_tables(f"{schema}_p")
        self.cmeta, _, self.applied = note_tables(f"{schema}_c")
        self.producer = Database(url, f"{schema}_p", self.pmeta, pool_size=4)
        self.consumer_db = Database(url, f"{schema}_c", self.cmeta, pool_size=4)
        self.deliveries = 0
        # Each delivery's redelivered flag, as the broker set it: True after any requeue.
        self.redelivered: list[bool] = []
        # (aggregate, note) in the order the handler ran; notes whose handling takes a while.
        self.seen: list[tuple[str, int]] = []
        self.slow: dict[int, float] = {}

    async def setup(self) -> None:
        for db in (self.producer, self.consumer_db):
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(f'CREATE SCHEMA "{db.schema}"')
                await conn.run_sync(db.metadata.create_all)
        await broker.declare_topology(
            self.bus.channel,
            self.bus.names,
            {"kconsumer": [NoteAdded.TYPE]},
            DELAYS,
            self.queue_type,
        )
        self.exchange = await broker.declare_exchange(self.bus.channel, self.bus.names)

        async def exchange() -> Any:
            return self.exchange

        self.relay = Relay(self.producer, exchange, producer="ktest", poll_interval=0.1)
        self.consumer = Consumer(
            "kconsumer", self.consumer_db, self.bus.names, {NoteAdded.TYPE: self.apply}, DELAYS, 2
        )
        dispatch = self.consumer._dispatch

        async def observed(message: AbstractIncomingMessage) -> None:
            self.redelivered.append(bool(message.redelivered))
            await dispatch(message)

        self.consumer._dispatch = observed  # type: ignore[method-assign]
        self._handled_before = self._handled_so_far()
        await self.consumer.start(await self.bus.connection.channel(publisher_confirms=True))

    async def apply(self, event: NoteAdded, envelope: Envelope, uow: UnitOfWork) -> None:
        self.deliveries += 1
        if event.note_id in self.slow:
            await asyncio.sleep(self.slow[event.note_id])
        self.seen.append((envelope.aggregate_id, event.note_id))
        if self.fail_always or event.note_id in self.poison:
            raise RuntimeError("poison: cannot apply this note")
        # Counted: an event applied twice leaves times at 2.
        stmt = insert(self.applied).values(note_id=event.note_id, times=1)
        await uow.execute(
            stmt.on_conflict_do_update(
                index_elements=["note_id"], set_={"times": self.applied.c.times + 1}
            )
        )
        if self.commits_itself:
            await uow.commit()

    def handled(self) -> dict[str, int]:
        """The NoteAdded events the consumer settled since setup, by outcome ("ok",
        "duplicate", "retry", "dead_lettered"): its metric, which counts for the process."""
        now = self._handled_so_far()
        return {
            o: n - self._handled_before[o] for o, n in now.items() if n > self._handled_before[o]
        }

    @staticmethod
    def _handled_so_far() -> dict[str, int]:
        counter = metrics.events_handled
        return {
            o: int(counter.labels("kconsumer", NoteAdded.TYPE, o)._value.get())
            for o in ("ok", "duplicate", "retry", "dead_lettered")
        }

    async def add_notes(self, note_ids: range, aggregates: int | None = None) -> None:
        """With `aggregates`, note n belongs to aggregate n % aggregates (else its own)."""
        async with self.producer.unit_of_work() as uow:
            for note_id in note_ids:
                await uow.execute(self.notes.insert().values(id=note_id, text=f"n{note_id}"))
                uow.emit(
                    NoteAdded(note_id=note_id, text=f"n{note_id}"),
                    aggregate_id=note_id % aggregates if aggregates else note_id,
                )
            await uow.commit()

    async def wait_all_applied(self, count: int, timeout: float = 20) -> int:
        """How many notes are applied, once `count` are or the time is up."""
        for _ in range(int(timeout / 0.05)):
            async with self.consumer_db.engine.connect() as conn:
                done = await conn.scalar(select(func.count()).select_from(self.applied))
            if done >= count:
                return int(done)
            await asyncio.sleep(0.05)
        return int(done)

    async def transactions_used(self) -> int:
        """Distinct inbox handled_at values: now() is the transaction's start time."""
        async with self.consumer_db.engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count(self.consumer_db.inbox.c.handled_at.distinct()))
                )
            )

    async def add_note(self, note_id: int, commit: bool = True) -> None:
        async with self.producer.unit_of_work() as uow:
            await uow.execute(self.notes.insert().values(id=note_id, text=f"note {note_id}"))
            uow.emit(NoteAdded(note_id=note_id, text=f"note {note_id}"), aggregate_id=note_id)
            if commit:
                await uow.commit()

    async def archive_note(self, note_id: int) -> None:
        """One commit of one NoteArchived (a type the consumer does not subscribe to)."""
        async with self.producer.unit_of_work() as uow:
            uow.emit(NoteArchived(note_id=note_id), aggregate_id=note_id)
            await uow.commit()

    async def unpublished(self) -> int:
        async with self.producer.engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count())
                    .select_from(self.producer.outbox)
                    .where(self.producer.outbox.c.published_at.is_(None))
                )
            )

    async def applied_times(self, note_id: int) -> int | None:
        async with self.consumer_db.engine.connect() as conn:
            return await conn.scalar(
                select(self.applied.c.times).where(self.applied.c.note_id == note_id)
            )

    async def wait_applied(self, note_id: int, timeout: float = 10) -> int | None:
        for _ in range(int(timeout / 0.05)):
            times = await self.applied_times(note_id)
            if times:
                return times
            await asyncio.sleep(0.05)
        return None

    async def close(self) -> None:
        await self.consumer.stop()
        for db in (self.producer, self.consumer_db):
            await drop_schema(db.engine, db.schema)
            await db.dispose()
        await broker.delete_topology(self.bus.channel, self.bus.names, ["kconsumer"], DELAYS)


class NoteArchived(Event, frozen=True):
    TYPE: ClassVar[str] = "ktest.NoteArchived"
    note_id: int


register(NoteArchived)


async def test_an_event_no_consumer_subscribes_to_reaches_a_queue_an_operator_bound(
    harness: Harness,
) -> None:
    tap = await harness.bus.channel.declare_queue(exclusive=True)
    await tap.bind(harness.exchange, routing_key=NoteArchived.TYPE)
    harness.relay.consumed = frozenset({NoteAdded.TYPE})
    before = metrics.outbox_unroutable.labels("ktest", NoteArchived.TYPE)._value.get()
    for note_id in (7, 8):
        await harness.archive_note(note_id)
        assert await harness.relay.publish_batch() == 1
        message = await tap.get(timeout=5)
        assert message.type == NoteArchived.TYPE
    after = metrics.outbox_unroutable.labels("ktest", NoteArchived.TYPE)._value.get()
    assert after == before
    assert await harness.relay.publish_batch() == 0  # marked published, not sent again


async def test_a_type_nobody_consumes_or_binds_is_not_sent_until_the_relay_tries_again(
    harness: Harness,
) -> None:
    """The broker returns such a message; the relay then marks the type's events published
    without sending them, until a while later: a queue bound meanwhile gets them from then on
    (the earlier ones from a replay of the event log)."""
    harness.relay.consumed = frozenset({NoteAdded.TYPE})
    harness.relay.unbound_recheck_s = 0.5
    sent: list[str] = []
    publish = harness.exchange.publish

    async def counted(message: Any, routing_key: str, **kw: Any) -> Any:
        sent.append(routing_key)
        return await publish(message, routing_key, **kw)

    harness.exchange.publish = counted  # type: ignore[method-assign]

    async def archive(note_id: int) -> None:
        await harness.archive_note(note_id)
        assert await harness.relay.publish_batch() == 1

    before = metrics.outbox_unroutable.labels("ktest", NoteArchived.TYPE)._value.get()
    await archive(1)  # returned: no queue
    tap = await harness.bus.channel.declare_queue(exclusive=True)
    await tap.bind(harness.exchange, routing_key=NoteArchived.TYPE)
    await archive(2)  # not sent: the type was unbound a moment ago
    assert sent == [NoteArchived.TYPE]
    await asyncio.sleep(0.6)
    await archive(3)  # tried again: the tap gets it
    message = await tap.get(timeout=5)
    assert json.decode(message.body)["payload"]["note_id"] == 3
    assert sent == [NoteArchived.TYPE, NoteArchived.TYPE]
    after = metrics.outbox_unroutable.labels("ktest", NoteArchived.TYPE)._value.get()
    assert after == before + 2
    # A type some consumer subscribes to is always sent.
    async with harness.producer.unit_of_work() as uow:
        uow.emit(NoteAdded(note_id=4, text="d"), aggregate_id=4)
        await uow.commit()
    assert await harness.relay.publish_batch() == 1
    assert sent[-1] == NoteAdded.TYPE


async def test_events_on_either_side_of_a_held_back_type_travel_in_one_pack(
    harness: Harness,
) -> None:
    """A drop's checkouts each write HoldReleased, OrderCompleted and one TicketPurchased:
    with the types nobody consumes held back, the TicketPurchased of many checkouts are one
    message."""
    harness.relay.consumed = frozenset({NoteAdded.TYPE})
    await harness.archive_note(1)
    assert await harness.relay.publish_batch() == 1  # returned: held back from now on
    tap = await harness.bus.channel.declare_queue(exclusive=True)
    await tap.bind(harness.exchange, routing_key=NoteAdded.TYPE)
    async with harness.producer.unit_of_work() as uow:
        for note_id in (2, 3, 4):
            uow.emit(NoteArchived(note_id=note_id), aggregate_id=note_id)
            uow.emit(NoteAdded(note_id=note_id, text="x"), aggregate_id=note_id)
        await uow.commit()
    assert await harness.relay.publish_batch() == 6
    message = await tap.get(timeout=5)
    assert message.content_type == PACK_CONTENT_TYPE
    assert message.headers["x-aggregates"] == ["2", "3", "4"]
    notes = [json.decode(e)["payload"]["note_id"] for e in unpack(message.body)]
    assert notes == [2, 3, 4]
    with pytest.raises(QueueEmpty):
        await tap.get(timeout=1)


async def test_a_run_of_one_type_travels_as_one_pack_and_the_runs_keep_their_order(
    harness: Harness,
) -> None:
    tap = await harness.bus.channel.declare_queue(exclusive=True)
    for event_type in (NoteAdded.TYPE, NoteArchived.TYPE):
        await tap.bind(harness.exchange, routing_key=event_type)
    async with harness.producer.unit_of_work() as uow:
        uow.emit(NoteAdded(note_id=1, text="a"), aggregate_id=1)
        uow.emit(NoteAdded(note_id=2, text="b"), aggregate_id=2)
        uow.emit(NoteArchived(note_id=1), aggregate_id=1)
        uow.emit(NoteAdded(note_id=3, text="c"), aggregate_id=3)
        await uow.commit()
    assert await harness.relay.publish_batch() == 4
    received = [await tap.get(timeout=5) for _ in range(3)]
    assert [(m.type, m.content_type) for m in received] == [
        (NoteAdded.TYPE, PACK_CONTENT_TYPE),
        (NoteArchived.TYPE, "application/json"),
        (NoteAdded.TYPE, "application/json"),
    ]
    pack = [decode_envelope(bytes(raw)) for raw in json.decode(received[0].body, type=list[Raw])]
    assert [(e.aggregate_id, e.sequence) for e in pack] == [("1", 1), ("2", 2)]
    assert received[0].headers["x-aggregates"] == ["1", "2"]
    assert decode_envelope(received[1].body).sequence == 3
    assert decode_envelope(received[2].body).sequence == 4
    # The consumer applied each note once, the pack in one transaction.
    assert await harness.wait_all_applied(3) == 3
    assert sorted(harness.seen) == [("1", 1), ("2", 2), ("3", 3)]


@pytest.fixture
async def harness(integration_db_url: str, schema_name: str, bus: Bus) -> AsyncIterator[Harness]:
    h = Harness(integration_db_url, schema_name, bus)
    await h.setup()
    yield h
    await h.close()


async def test_event_committed_with_its_change_reaches_the_consumer(harness: Harness) -> None:
    relay_task = asyncio.create_task(harness.relay.run())
    try:
        await harness.add_note(1)
        assert await harness.wait_applied(1) == 1
        async with harness.producer.engine.connect() as conn:
            row = (await conn.execute(select(harness.producer.outbox))).one()
        assert row.published_at is not None and row.sequence == 1  # kept as the event log
    finally:
        relay_task.cancel()


async def test_under_load_the_relay_batches_commits_and_after_a_quiet_moment_it_waits_for_none(
    harness: Harness,
) -> None:
    relay = harness.relay
    relay.batch_interval = 2.0
    batches: list[list[int]] = []

    async def note_batch(rows: list[Any]) -> None:
        batches.append(sorted(int(row.aggregate_id) for row in rows))

    relay.after_publish = note_batch
    relay_task = asyncio.create_task(relay.run())
    try:
        await harness.add_note(1)  # the first event in a while: published at once
        assert await harness.wait_applied(1, timeout=1.5) == 1
        for note_id in range(2, 7):  # five commits within the interval: one batch
            await harness.add_note(note_id)
        assert await harness.wait_applied(6) == 1
        assert all([await harness.applied_times(n) for n in range(2, 7)])
        assert batches == [[1], [2, 3, 4, 5, 6]]
    finally:
        relay_task.cancel()


async def test_a_batch_that_sends_nothing_sets_no_pace(harness: Harness) -> None:
    """A checkout's events before its TicketPurchased are of types nobody consumes: their
    batches are held back, and must not hold back the purchase behind them."""
    relay = harness.relay
    relay.consumed = frozenset({NoteAdded.TYPE})
    relay.unbound_recheck_s = 60.0
    relay.batch_interval = 4.0
    await harness.archive_note(1)
    assert await relay.publish_batch() == 1  # returned: held back from now on
    await asyncio.sleep(4.1)  # that batch's pace is over
    relay_task = asyncio.create_task(relay.run())
    try:
        await harness.archive_note(2)
        for _ in range(200):  # the held-back batch published (marked), nothing sent
            left = await harness.unpublished()
            if left == 0:
                break
            await asyncio.sleep(0.05)
        assert left == 0
        await harness.add_note(3)
        assert await harness.wait_applied(3, timeout=2) == 1  # not 4 s behind it
    finally:
        relay_task.cancel()


async def test_rolled_back_change_publishes_nothing(harness: Harness) -> None:
    await harness.add_note(7, commit=False)
    assert await harness.relay.publish_batch() == 0
    async with harness.producer.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(harness.notes)) == 0
        assert await conn.scalar(select(func.count()).select_from(harness.producer.outbox)) == 0
    await harness.add_note(8)
    assert await harness.relay.publish_batch() == 1
    assert await harness.wait_applied(8) == 1
    assert await harness.applied_times(7) is None


async def test_relay_killed_between_publish_and_mark_republishes_and_consumer_applies_once(
    harness: Harness,
) -> None:
    """The broker confirmed the event and the relay died before marking it: it is published
    again, and the second copy reaches the consumer and is settled as a duplicate, the note
    applied once (the handler counts its applications)."""
    await harness.add_note(3)

    class Killed(Exception):
        pass

    async def die(rows: list[Any]) -> None:
        raise Killed  # the process dies after the broker confirmed, before the rows are marked

    harness.relay.after_publish = die
    with pytest.raises(Killed):
        await harness.relay.publish_batch()
    harness.relay.after_publish = None
    assert await harness.unpublished() == 1
    assert await harness.wait_applied(3) == 1  # the first copy
    assert await harness.relay.publish_batch() == 1  # published a second time

    assert await eventually(lambda: _settled_twice(harness))
    assert harness.handled() == {"ok": 1, "duplicate": 1}  # the copy recognised by the inbox
    assert harness.deliveries == 1
    assert await harness.applied_times(3) == 1


async def test_message_that_always_fails_is_dead_lettered_after_the_configured_attempts(
    integration_db_url: str, schema_name: str, bus: Bus
) -> None:
    h = Harness(integration_db_url, schema_name, bus, fail_always=True)
    await h.setup()
    try:
        await h.add_note(5)
        assert await h.relay.publish_batch() == 1
        dlq = await bus.channel.get_queue(bus.names.dead_letter_queue("kconsumer"))
        message = None
        for _ in range(200):
            message = await dlq.get(fail=False, no_ack=True)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None, "nothing reached the dead-letter queue"
        assert message.headers["x-attempts"] == len(DELAYS) + 1
        assert "poison" in str(message.headers["x-last-error"])
        assert h.deliveries == len(DELAYS) + 1
        assert await h.applied_times(5) is None
    finally:
        await h.close()


async def _dead_letters(bus: Bus) -> list[Any]:
    dlq = await bus.channel.get_queue(bus.names.dead_letter_queue("kconsumer"))
    found = []
    while (message := await dlq.get(fail=False, no_ack=True)) is not None:
        found.append(message)
    return found


async def test_a_burst_is_applied_in_batches_each_event_once(harness: Harness) -> None:
    await harness.add_notes(range(1, 301))
    assert await harness.relay.publish_batch() == 300
    assert await harness.wait_all_applied(300) == 300
    async with harness.consumer_db.engine.connect() as conn:
        times = (await conn.execute(select(harness.applied.c.times))).scalars().all()
        inbox = await conn.scalar(select(func.count()).select_from(harness.consumer_db.inbox))
    assert sorted(times) == [1] * 300 and inbox == 300
    assert harness.deliveries == 300
    # Far fewer transactions than events: the waiting messages were applied together.
    assert await harness.transactions_used() < 150


async def test_an_aggregate_applies_in_order_while_a_slow_one_holds_only_its_own(
    harness: Harness,
) -> None:
    """Note 1 (aggregate 1) takes a while: the later notes of aggregate 1 wait for it, in
    order; aggregates 0 and 2 go on meanwhile, in order too. (One event per batch, so that
    which events share a transaction does not depend on how the deliveries were read.)"""
    harness.consumer.batch_size = 1
    harness.slow[1] = 3.0  # longer than publishing the 60 notes one by one takes
    for note_id in range(1, 61):  # one message each (a relay batch of several is a pack)
        await harness.add_notes(range(note_id, note_id + 1), aggregates=3)
        assert await harness.relay.publish_batch() == 1
    assert await harness.wait_all_applied(60) == 60
    for aggregate in ("0", "1", "2"):
        notes = [n for a, n in harness.seen if a == aggregate]
        assert notes == sorted(notes) and len(notes) == 20
    # Everything of aggregates 0 and 2 was applied before the slow note was.
    first_of_1 = harness.seen.index(("1", 1))
    assert {a for a, _ in harness.seen[first_of_1:]} == {"1"}
    assert first_of_1 == 40


async def test_a_failing_event_in_a_batch_fails_alone_and_the_rest_apply_once(
    integration_db_url: str, schema_name: str, bus: Bus
) -> None:
    poison = frozenset({40, 160})
    h = Harness(integration_db_url, schema_name, bus, poison=poison)
    await h.setup()
    try:
        await h.add_notes(range(1, 201))
        assert await h.relay.publish_batch() == 200
        assert await h.wait_all_applied(198) == 198
        dead: list[Any] = []
        for _ in range(200):
            dead += await _dead_letters(bus)
            if len(dead) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(int(m.headers["aggregate_id"]) for m in dead) == [40, 160]
        assert all(m.headers["x-attempts"] == len(DELAYS) + 1 for m in dead)
        async with h.consumer_db.engine.connect() as conn:
            rows = dict((await conn.execute(select(h.applied.c.note_id, h.applied.c.times))).all())
        assert set(rows) == set(range(1, 201)) - poison
        assert set(rows.values()) == {1}
        assert await h.applied_times(40) is None
    finally:
        await h.close()


async def test_a_handler_that_commits_itself_is_never_batched(
    integration_db_url: str, schema_name: str, bus: Bus
) -> None:
    """A batch cannot let one handler commit the others' inbox rows before they ran: it
    falls back to one transaction per event, and every event is still applied once."""
    h = Harness(integration_db_url, schema_name, bus, commits_itself=True)
    await h.setup()
    try:
        await h.add_notes(range(1, 101))
        assert await h.relay.publish_batch() == 100
        assert await h.wait_all_applied(100) == 100
        async with h.consumer_db.engine.connect() as conn:
            times = (await conn.execute(select(h.applied.c.times))).scalars().all()
        assert sorted(times) == [1] * 100
        assert await h.transactions_used() == 100
        assert await _dead_letters(bus) == []
    finally:
        await h.close()


def _note_envelope(note_id: int) -> bytes:
    return envelope(NoteAdded(note_id=note_id, text=f"n{note_id}"), note_id, note_id)


async def _send_pack(harness: Harness, bodies: list[bytes]) -> None:
    """A pack straight into the consumer's queue, as the relay sends a run of events."""
    await harness.bus.channel.default_exchange.publish(
        aio_pika.Message(
            pack(bodies),
            content_type=PACK_CONTENT_TYPE,
            headers={"producer": "ktest", "x-events": len(bodies)},
        ),
        routing_key=harness.bus.names.queue("kconsumer"),
    )


async def test_the_same_event_twice_in_one_batch_is_applied_once_and_counted_a_duplicate(
    harness: Harness,
) -> None:
    """A pack holding one event twice (a relay that died between publishing and marking,
    then sent it again within the next run): applied once, and the metric says one handled
    and one duplicate, as it would for the two copies apart."""
    body = _note_envelope(77)
    await _send_pack(harness, [body, body])
    assert await eventually(lambda: _settled_twice(harness))
    assert harness.handled() == {"ok": 1, "duplicate": 1}
    assert harness.deliveries == 1
    assert await harness.applied_times(77) == 1


async def _settled_twice(harness: Harness) -> bool:
    return sum(harness.handled().values()) >= 2


async def test_an_envelope_that_does_not_decode_in_a_pack_holds_back_none_of_the_others(
    harness: Harness,
) -> None:
    """The pack's other events are applied at once, and the bad one alone ends as a dead
    letter after its retries (it used to stop the pack, unacknowledged, events after it
    included)."""
    await _send_pack(harness, [_note_envelope(78), b'{"not": "an envelope"}', _note_envelope(79)])
    assert await harness.wait_all_applied(2, timeout=5) == 2
    assert {await harness.applied_times(n) for n in (78, 79)} == {1}

    async def dead_lettered() -> list[deadletters.DeadLetter]:
        return await deadletters.inspect(harness.bus.channel, harness.bus.names, "kconsumer")

    assert await eventually(dead_lettered)
    [letter] = await dead_lettered()
    assert letter.body == b'{"not": "an envelope"}'
