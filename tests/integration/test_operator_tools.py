"""Replay and dead-letter operations on the real broker and database (issue: operators)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

from contracts.envelope import Envelope
from services.kernel import broker, deadletters
from services.kernel import consumer as consumer_module
from services.kernel.db import DatabaseUnavailable, UnitOfWork
from services.kernel.eventlog import Filters, follow_events
from services.kernel.projections import Projection, RebuildReport, rebuild
from services.kernel.replay import PACK, NoConsumerQueue, plan, replay
from tests.integration.conftest import Bus
from tests.integration.test_messaging import Harness, NoteAdded


class VersionedConsumer(Harness):
    """Applies notes with a handler that can be buggy, fixed, or poisonous."""

    mode = "buggy"
    poison_ids: frozenset[int] = frozenset()
    unavailable_for = 0  # calls that find the database away

    async def apply(self, event: NoteAdded, envelope: Envelope, uow: UnitOfWork) -> None:
        self.deliveries += 1
        if self.unavailable_for > 0:
            self.unavailable_for -= 1
            raise DatabaseUnavailable("the database went away")
        if self.mode == "poison" or event.note_id in self.poison_ids:
            raise ValueError("cannot parse note")
        times = 1 if self.mode == "buggy" else 2  # the fixed handler records the right value
        seq = envelope.sequence
        stmt = insert(self.applied).values(note_id=event.note_id, times=times, seq=seq)
        await uow.execute(
            stmt.on_conflict_do_update(
                index_elements=["note_id"], set_={"times": times, "seq": seq}
            )
        )

    async def all_applied(self) -> dict[int, int]:
        async with self.consumer_db.engine.connect() as conn:
            return dict(
                (await conn.execute(select(self.applied.c.note_id, self.applied.c.times))).all()
            )

    async def eventually_applied(self, expected: dict[int, int], timeout: float = 20) -> bool:
        for _ in range(int(timeout / 0.05)):
            if await self.all_applied() == expected:
                return True
            await asyncio.sleep(0.05)
        return False

    async def drained(self) -> None:
        """Wait until the consumer's queue is empty and its in-flight work is done."""
        queue = await self.bus.channel.declare_queue(
            self.bus.names.queue("kconsumer"), passive=True
        )
        for _ in range(200):
            declared = await self.bus.channel.declare_queue(queue.name, passive=True)
            if declared.declaration_result.message_count == 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)


@pytest.fixture
async def consumer(
    integration_db_url: str, schema_name: str, bus: Bus, request: pytest.FixtureRequest
) -> AsyncIterator[VersionedConsumer]:
    """On a classic queue, or the queue type a test names (`indirect` parametrization)."""
    queue_type = getattr(request, "param", "classic")
    h = VersionedConsumer(integration_db_url, schema_name, bus, queue_type=queue_type)
    await h.setup()
    yield h
    await h.close()


async def _publish_notes(h: VersionedConsumer, ids: range) -> None:
    for note_id in ids:
        await h.add_note(note_id)
    while await h.relay.publish_batch():
        pass
    for note_id in ids:
        assert await h.wait_applied(note_id)


async def _replay(h: VersionedConsumer, reprocess: bool) -> int:
    return await replay(
        h.producer.engine,
        h.bus.channel,
        h.bus.names,
        "kconsumer",
        [NoteAdded.TYPE],
        Filters(),
        reprocess=reprocess,
        candidates=[h.producer.schema],
    )


async def test_replay_without_reprocess_changes_nothing_and_with_it_applies_the_fix(
    consumer: VersionedConsumer,
) -> None:
    await _publish_notes(consumer, range(1, 21))
    before = await consumer.all_applied()
    assert before == {i: 1 for i in range(1, 21)}
    deliveries = consumer.deliveries

    the_plan = await plan(
        consumer.producer.engine,
        "kconsumer",
        [NoteAdded.TYPE],
        Filters(),
        candidates=[consumer.producer.schema],
    )
    assert the_plan.total == 20 and the_plan.counts == {NoteAdded.TYPE: 20}

    consumer.mode = "fixed"
    assert await _replay(consumer, reprocess=False) == 20
    await consumer.drained()
    assert await consumer.all_applied() == before  # already handled: no second effect
    assert consumer.deliveries == deliveries

    assert await _replay(consumer, reprocess=True) == 20
    await consumer.drained()
    assert await consumer.all_applied() == {i: 2 for i in range(1, 21)}  # the corrected state
    assert consumer.deliveries == deliveries + 20


async def test_a_replay_travels_in_packs_each_applied_in_one_transaction(
    consumer: VersionedConsumer,
) -> None:
    await consumer.add_notes(range(1, 601))
    while await consumer.relay.publish_batch():
        pass
    assert await consumer.wait_all_applied(600) == 600
    consumer.mode = "fixed"
    assert await _replay(consumer, reprocess=True) == 600
    assert await consumer.eventually_applied({i: 2 for i in range(1, 601)})
    inbox = consumer.consumer_db.inbox
    async with consumer.consumer_db.engine.connect() as conn:
        counts = (await conn.execute(select(inbox.c.handled_count))).scalars().all()
        batches = await conn.scalar(select(func.count(inbox.c.handled_at.distinct())))
    assert sorted(counts) == [2] * 600
    assert batches == -(-600 // PACK)  # one transaction per pack of the replay


async def test_a_failing_event_in_a_replayed_pack_is_retried_alone(
    consumer: VersionedConsumer,
) -> None:
    await consumer.add_notes(range(1, 301))
    while await consumer.relay.publish_batch():
        pass
    assert await consumer.wait_all_applied(300) == 300
    consumer.mode, consumer.poison_ids = "fixed", frozenset({120})
    assert await _replay(consumer, reprocess=True) == 300
    letters = await _dead_letters(consumer, 1)
    assert len(letters) == 1 and letters[0].attempts == 3
    assert letters[0].type == NoteAdded.TYPE and letters[0].headers["aggregate_id"] == "120"
    # The rest of the pack went on without it.
    assert await consumer.eventually_applied({i: 1 if i == 120 else 2 for i in range(1, 301)})


async def test_poison_event_is_dead_lettered_then_requeued_after_the_fix_and_applied_once(
    consumer: VersionedConsumer,
) -> None:
    consumer.mode = "poison"
    await consumer.add_note(99)
    assert await consumer.relay.publish_batch() == 1
    letters = await _dead_letters(consumer, 1)
    assert len(letters) == 1
    assert letters[0].attempts == 3 and "cannot parse note" in letters[0].error
    assert letters[0].type == NoteAdded.TYPE

    consumer.mode = "fixed"
    requeued = await deadletters.settle(
        consumer.bus.channel,
        consumer.bus.names,
        "kconsumer",
        lambda d: d.message_id == letters[0].message_id,
        requeue=True,
    )
    assert requeued == 1
    assert await consumer.wait_applied(99) == 2
    await consumer.drained()
    assert consumer.deliveries == 4  # three failed attempts, then exactly one successful one
    assert await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer") == []


async def test_letters_requeued_to_a_queue_that_is_gone_stay_dead_letters(
    consumer: VersionedConsumer,
) -> None:
    """The consumer's queue deleted (to be declared anew with other arguments): a requeue
    cannot reach it, says so, and both letters stay in the dead-letter queue. Before, the
    broker dropped them as unroutable and the letters were acknowledged, gone."""
    consumer.mode = "poison"
    for note_id in (41, 42):
        await consumer.add_note(note_id)
    await consumer.relay.publish_batch()
    assert len(await _dead_letters(consumer, 2)) == 2
    await consumer.bus.channel.queue_delete(consumer.bus.names.queue("kconsumer"))
    with pytest.raises(broker.Unroutable):
        await deadletters.settle(
            consumer.bus.channel, consumer.bus.names, "kconsumer", lambda d: True, requeue=True
        )
    kept = await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer")
    assert sorted(letter.attempts for letter in kept) == [3, 3]


async def _dead_letters(consumer: VersionedConsumer, count: int) -> list[deadletters.DeadLetter]:
    letters: list[deadletters.DeadLetter] = []
    for _ in range(200):
        letters = await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer")
        if len(letters) >= count:
            break
        await asyncio.sleep(0.05)
    return letters


async def test_a_reprocessed_event_dead_lettered_is_reprocessed_when_requeued(
    consumer: VersionedConsumer,
) -> None:
    """A `--reprocess` replay's event that failed keeps being a reprocess when requeued: its
    first handling is in the inbox, and as a plain delivery it would be skipped as a duplicate
    while `dlq requeue` said it was sent back."""
    await consumer.add_notes(range(1, 4))
    while await consumer.relay.publish_batch():
        pass
    assert await consumer.wait_all_applied(3) == 3
    consumer.mode, consumer.poison_ids = "fixed", frozenset({2})
    assert await _replay(consumer, reprocess=True) == 3
    [letter] = await _dead_letters(consumer, 1)
    consumer.poison_ids = frozenset()
    requeued = await deadletters.settle(
        consumer.bus.channel, consumer.bus.names, "kconsumer", lambda d: True, requeue=True
    )
    assert requeued == 1 and letter.headers["aggregate_id"] == "2"
    assert await consumer.eventually_applied({1: 2, 2: 2, 3: 2})


@pytest.mark.parametrize("consumer", ["quorum"], indirect=True)
async def test_looking_at_dead_letters_does_not_count_as_delivering_them(
    consumer: VersionedConsumer,
) -> None:
    """`dlq list` and `dlq show` put each letter back as it was: a requeue would count as a
    delivery (the quorum queue's `x-delivery-count`), and a quorum queue drops a message past
    its delivery limit (20 by default from RabbitMQ 4.0), with nowhere further to go."""
    consumer.mode = "poison"
    await consumer.add_notes(range(1, 3))
    while await consumer.relay.publish_batch():
        pass
    first = await _dead_letters(consumer, 2)
    for _ in range(3):
        seen = await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer")
    dropped = await deadletters.settle(
        consumer.bus.channel,
        consumer.bus.names,
        "kconsumer",
        lambda d: d.message_id == first[0].message_id,
        requeue=False,
    )
    assert dropped == 1
    [kept] = await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer")
    assert [d.message_id for d in seen] == [d.message_id for d in first]
    assert kept.message_id == first[1].message_id and kept.attempts == 3
    counted = first[1].headers.get("x-delivery-count") or 0  # the count as first seen
    assert (kept.headers.get("x-delivery-count") or 0) <= counted, kept.headers


@pytest.mark.parametrize("consumer", ["quorum"], indirect=True)
async def test_a_long_database_outage_spends_no_delivery_and_loses_no_event(
    consumer: VersionedConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database away for more tries than the quorum queue's delivery limit: the event is
    held and handled again, never requeued (each requeue counts as a delivery, and the queue
    dead-letters the message at the limit), and is applied once the database answers. The
    broker delivered it once."""
    monkeypatch.setattr(consumer_module, "DATABASE_RETRY_S", (0.01, 0.02))
    consumer.unavailable_for = broker.BROKER_DELIVERY_LIMIT + 5
    await consumer.add_note(5)
    assert await consumer.relay.publish_batch() == 1
    assert await consumer.eventually_applied({5: 1})
    await consumer.drained()
    assert consumer.deliveries == broker.BROKER_DELIVERY_LIMIT + 6  # then applied once
    assert consumer.redelivered == [False]
    assert await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer") == []


async def test_dropping_a_dead_letter_removes_it_for_good(consumer: VersionedConsumer) -> None:
    consumer.mode = "poison"
    await consumer.add_note(7)
    await consumer.relay.publish_batch()
    for _ in range(100):
        if await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer"):
            break
        await asyncio.sleep(0.05)
    dropped = await deadletters.settle(
        consumer.bus.channel, consumer.bus.names, "kconsumer", lambda d: True, requeue=False
    )
    assert dropped == 1
    assert await deadletters.inspect(consumer.bus.channel, consumer.bus.names, "kconsumer") == []
    assert await consumer.applied_times(7) is None


NOTES = Projection(tables={"applied": ("seq",)}, events=[NoteAdded.TYPE])


async def _rebuild(consumer: VersionedConsumer, timeout_s: float = 20) -> RebuildReport:
    return await rebuild(
        consumer.producer.engine,
        consumer.bus.channel,
        consumer.bus.names,
        "kconsumer",
        NOTES,
        timeout_s=timeout_s,
        candidates=[consumer.producer.schema],
        schema=consumer.consumer_db.schema,
    )


async def test_projection_rebuilt_from_the_event_log_is_the_same(
    consumer: VersionedConsumer,
) -> None:
    await _publish_notes(consumer, range(1, 31))
    assert consumer.deliveries == 30
    report = await _rebuild(consumer)
    assert report.replayed == 30
    assert report.before["applied"].rows == 30
    assert report.matches, (report.before, report.after)
    assert consumer.deliveries == 60  # every row was written again from the log


async def test_a_rebuild_answers_from_the_old_rows_until_the_replay_writes_them(
    consumer: VersionedConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows stay while the replay is on its way (it was emptied first, so the service answered
    from a partial projection); a row no event wrote is deleted, a changed one written back.
    Events handled live meanwhile (newer than the log's head when the rebuild began) do not
    count as replayed ones: the rows are not deleted before their replayed events arrive."""
    monkeypatch.setattr(consumer_module, "DATABASE_RETRY_S", (0.01, 0.02))
    await _publish_notes(consumer, range(1, 11))
    schema = consumer.consumer_db.schema
    async with consumer.consumer_db.engine.begin() as conn:
        producer = await conn.scalar(text(f'SELECT min(producer) FROM "{schema}".inbox'))
        await conn.execute(insert(consumer.applied).values(note_id=99, times=1, seq=None))
        await conn.execute(
            consumer.applied.update().where(consumer.applied.c.note_id == 3).values(times=7)
        )
    consumer.unavailable_for = 10**6  # the replayed events wait for the database
    rebuilding = asyncio.create_task(_rebuild(consumer))
    for _ in range(2000):  # until a replayed event has reached the handler
        if consumer.deliveries > 10:
            break
        await asyncio.sleep(0.01)
    held = await consumer.all_applied()
    assert held == {**{i: 1 for i in range(1, 11)}, 3: 7, 99: 1}
    async with consumer.consumer_db.engine.begin() as conn:  # ten live events handled
        await conn.execute(
            text(
                f'INSERT INTO "{schema}".inbox (event_id, producer, type, sequence) '
                "SELECT gen_random_uuid(), :p, :t, 1000 + n FROM generate_series(1, 10) AS n"
            ),
            {"p": producer, "t": NoteAdded.TYPE},
        )
    await asyncio.sleep(0.2)  # the rebuild polls meanwhile: its events are not applied yet
    assert held == await consumer.all_applied()
    consumer.unavailable_for = 0
    report = await rebuilding
    assert report.replayed == 10 and report.complete
    assert await consumer.all_applied() == {i: 1 for i in range(1, 11)}
    assert (report.before["applied"].rows, report.after["applied"].rows) == (11, 10)


async def test_a_rebuild_that_runs_out_of_time_keeps_every_row_and_says_so(
    consumer: VersionedConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "DATABASE_RETRY_S", (0.01, 0.02))
    await _publish_notes(consumer, range(1, 6))
    consumer.unavailable_for = 10**6
    report = await _rebuild(consumer, timeout_s=0.5)
    assert (report.complete, report.matches, report.expected, report.applied) == (
        False,
        False,
        5,
        0,
    )
    assert report.after["applied"].rows == 5  # nothing deleted
    consumer.unavailable_for = 0
    assert await consumer.eventually_applied({i: 1 for i in range(1, 6)})


async def test_a_rebuild_waits_for_a_relays_batch_in_flight(consumer: VersionedConsumer) -> None:
    """A batch the relay has sent but not yet marked (its sequences not committed) may be
    applied already: the rebuild waits for the relay's lock before it forgets anything, so the
    heads it reads cover what was applied."""
    await _publish_notes(consumer, range(1, 6))
    key = f"relay:{consumer.producer.schema}"
    async with consumer.producer.engine.connect() as relay:
        batch = await relay.begin()  # a relay mid-batch holds its lock
        await relay.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
        rebuilding = asyncio.create_task(_rebuild(consumer))
        await asyncio.sleep(0.5)
        async with consumer.consumer_db.engine.connect() as conn:
            forgotten = await conn.scalar(
                select(func.count()).where(consumer.applied.c.seq.is_(None))
            )
        assert forgotten == 0 and not rebuilding.done()
        await batch.commit()
    report = await rebuilding
    assert report.matches and report.replayed == 5


async def test_a_rebuild_whose_event_fails_again_stops_waiting_and_says_so(
    consumer: VersionedConsumer,
) -> None:
    """An event that fails again (dead-lettered) never comes: once nothing was applied for a
    while and the queue is empty, the rebuild stops waiting, keeps every row and says so."""
    await _publish_notes(consumer, range(1, 5))
    consumer.poison_ids = frozenset({2})
    started = asyncio.get_running_loop().time()
    report = await rebuild(
        consumer.producer.engine,
        consumer.bus.channel,
        consumer.bus.names,
        "kconsumer",
        NOTES,
        timeout_s=60,
        candidates=[consumer.producer.schema],
        schema=consumer.consumer_db.schema,
        stall_s=1.0,
    )
    assert asyncio.get_running_loop().time() - started < 30
    assert (report.complete, report.expected, report.applied) == (False, 4, 3)
    assert report.after["applied"].rows == 4  # the dead-lettered note's row kept


async def test_a_rows_sequences_are_not_part_of_what_a_rebuild_compares(
    consumer: VersionedConsumer,
) -> None:
    """Rows copied before their table kept sequences (NULL after the upgrade's migration) are
    the same rows once a rebuild has given them their sequences."""
    await _publish_notes(consumer, range(1, 6))
    async with consumer.consumer_db.engine.begin() as conn:
        await conn.execute(consumer.applied.update().values(seq=None))
    report = await _rebuild(consumer)
    assert report.matches, (report.before, report.after)


async def test_a_replay_to_a_queue_not_on_the_broker_says_so_and_sends_nothing(
    consumer: VersionedConsumer,
) -> None:
    """The default exchange drops what it cannot route and the broker confirms it anyway: with
    another broker prefix, a replay reported its events sent and nothing arrived."""
    await _publish_notes(consumer, range(1, 4))
    channel = await consumer.bus.connection.channel(publisher_confirms=True)
    with pytest.raises(NoConsumerQueue, match="RESELLIO_BROKER_PREFIX"):
        await replay(
            consumer.producer.engine,
            channel,
            broker.Names("elsewhere"),
            "kconsumer",
            [NoteAdded.TYPE],
            Filters(),
            reprocess=True,
            candidates=[consumer.producer.schema],
        )
    assert consumer.deliveries == 3


async def test_a_rebuild_with_nothing_consuming_empties_nothing(
    consumer: VersionedConsumer,
) -> None:
    """It would empty the projection, then wait in vain for its events while the service
    answered from empty tables."""
    await _publish_notes(consumer, range(1, 6))
    await consumer.consumer._channel.close()  # the service gone: nothing consumes its queue
    with pytest.raises(NoConsumerQueue, match="nothing consumes"):
        await _rebuild(consumer, timeout_s=5)
    assert await consumer.all_applied() == {i: 1 for i in range(1, 6)}


async def test_a_tail_shows_an_event_committed_after_a_later_one_once(
    consumer: VersionedConsumer,
) -> None:
    """Event A draws its id, event B a later one and commits first: the tail shows B, then A
    when it commits (following ids alone, it had moved past A's), and each once."""
    await _publish_notes(consumer, range(1, 4))
    schema = consumer.producer.schema
    follower = follow_events(
        consumer.producer.engine, Filters(), interval=0.02, settle_s=0.5, candidates=[schema]
    ).__aiter__()
    context = [await follower.__anext__() for _ in range(3)]
    assert [r.aggregate_id for r in context] == ["1", "2", "3"]
    await asyncio.sleep(1.0)  # those settled
    insert_note = text(  # occurred an hour ago (a host's clock behind): only ids count
        f'INSERT INTO "{schema}".outbox (event_id, type, version, occurred_at, aggregate_id, '
        "payload) VALUES (gen_random_uuid(), :t, 1, now() - interval '1 hour', :a, '{}')"
    )
    async with consumer.producer.engine.connect() as first:
        transaction = await first.begin()
        await first.execute(insert_note, {"t": NoteAdded.TYPE, "a": "A"})
        async with consumer.producer.engine.begin() as second:
            await second.execute(insert_note, {"t": NoteAdded.TYPE, "a": "B"})
        assert (await asyncio.wait_for(follower.__anext__(), 5)).aggregate_id == "B"
        await transaction.commit()
    assert (await asyncio.wait_for(follower.__anext__(), 5)).aggregate_id == "A"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(follower.__anext__(), 0.5)
