"""Catalog's projections of auth and ordering, fed by real events on the test broker.

The consumer runs on a migrated catalog schema in a scratch database; events are published
onto a private exchange exactly as a relay publishes them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import count
from typing import Any

import aio_pika
import msgspec
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from contracts.auth import (
    OrganizerRejected,
    OrganizerVerified,
    UserBanned,
    UserRegistered,
    UserUnbanned,
)
from contracts.codec import encode
from contracts.envelope import Envelope, Event
from contracts.ordering import TicketPurchased, TicketRefunded, TicketTransferred
from contracts.timeutil import utcnow
from services.catalog.consumers import HANDLERS, on_ticket_purchased
from services.catalog.models import events, locations, metadata, organizers, ticket_types, tickets
from services.kernel import broker
from services.kernel.consumer import Consumer
from services.kernel.db import Database
from services.kernel.migrate import drop_database, ensure_database, upgrade
from tests.integration.conftest import Bus
from tests.support.infra import database_url

DELAYS = (50, 100)
_sequence = count(1)


def _envelope(
    event: Event,
    aggregate_id: str,
    event_id: uuid.UUID | None = None,
    sequence: int | None = None,
) -> Envelope:
    """As a relay writes it: a new id and the next sequence unless given."""
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=event.TYPE,
        version=event.VERSION,
        occurred_at=utcnow(),
        producer=event.TYPE.split(".")[0],
        aggregate_id=aggregate_id,
        sequence=next(_sequence) if sequence is None else sequence,
        payload=msgspec.Raw(encode(event)),
    )


class Catalog:
    """The catalog's consumer on its own migrated database, and a way to publish to it."""

    def __init__(self, url: str, bus: Bus) -> None:
        self.url = url
        self.bus = bus
        self.db = Database(url, "catalog", metadata, pool_size=4)

    async def start(self) -> None:
        await broker.declare_topology(
            self.bus.channel, self.bus.names, {"catalog": sorted(HANDLERS)}, DELAYS, "classic"
        )
        self.exchange = await broker.declare_exchange(self.bus.channel, self.bus.names)
        self.consumer = Consumer("catalog", self.db, self.bus.names, HANDLERS, DELAYS, 4)
        await self.consumer.start(await self.bus.connection.channel(publisher_confirms=True))

    async def publish(
        self,
        event: Event,
        aggregate_id: str,
        event_id: uuid.UUID | None = None,
        sequence: int | None = None,
    ) -> uuid.UUID:
        """Publish as a relay does; the same `event_id` again is a redelivery, an older
        `sequence` a replayed event's."""
        envelope = _envelope(event, aggregate_id, event_id, sequence)
        await self.exchange.publish(
            aio_pika.Message(
                encode(envelope),
                message_id=str(envelope.id),
                type=envelope.type,
                headers={"producer": envelope.producer, "aggregate_id": aggregate_id},
            ),
            routing_key=event.TYPE,
        )
        return envelope.id

    async def handled(self, *event_ids: uuid.UUID, timeout: float = 10) -> None:
        """Wait until the inbox holds these events (the consumer applied them)."""
        inbox = self.db.inbox
        for _ in range(int(timeout / 0.02)):
            async with self.db.engine.connect() as conn:
                done = await conn.scalar(
                    select(func.count()).where(inbox.c.event_id.in_(event_ids))
                )
            if done == len(set(event_ids)):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("events not handled in time")

    async def one(self, stmt: Any) -> Any:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(stmt)).first()

    async def close(self) -> None:
        await self.consumer.stop()
        await broker.delete_topology(self.bus.channel, self.bus.names, ["catalog"], DELAYS)
        await self.db.dispose()


@pytest.fixture
async def catalog(bus: Bus) -> AsyncIterator[Catalog]:
    url = make_url(database_url()).set(database=f"resellio_itcat_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    await asyncio.to_thread(upgrade, "catalog", rendered)
    running = Catalog(rendered, bus)
    await running.start()
    try:
        yield running
    finally:
        await running.close()
        await drop_database(rendered)


def _registered(user_id: int, organizer_id: int, role: str = "organizer") -> UserRegistered:
    return UserRegistered(
        user_id=user_id,
        email=f"o{user_id}@example.com",
        role=role,
        role_id=organizer_id,
        first_name="Ada",
        last_name="L",
        login=f"o{user_id}",
        account_state="active",
        company_name="Acme",
        is_verified=False,
    )


async def _organizer(catalog: Catalog, organizer_id: int) -> Any:
    return await catalog.one(select(organizers).where(organizers.c.organizer_id == organizer_id))


async def test_organizer_may_write_only_while_verified_and_active(catalog: Catalog) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    at = utcnow()
    ids = [await catalog.publish(_registered(10, 5), user)]
    ids.append(await catalog.publish(_registered(11, 6, role="customer"), "other"))
    await catalog.handled(*ids)
    assert (await _organizer(catalog, 5)).verified is False
    assert await _organizer(catalog, 6) is None  # customers are not projected

    await catalog.handled(
        await catalog.publish(
            OrganizerVerified(user_id=10, organizer_id=5, account_state="active"), user
        )
    )
    row = await _organizer(catalog, 5)
    assert (row.verified, row.account_state) == (True, "active")

    ban = UserBanned(user_id=10, role="organizer", role_id=5, at=at, account_state="banned")
    await catalog.handled(await catalog.publish(ban, user))
    assert (await _organizer(catalog, 5)).account_state == "banned"

    unban = UserUnbanned(user_id=10, role="organizer", role_id=5, at=at, account_state="active")
    await catalog.handled(await catalog.publish(unban, user))
    row = await _organizer(catalog, 5)
    assert (row.verified, row.account_state) == (True, "active")

    rejected = OrganizerRejected(user_id=10, organizer_id=5, account_state="banned", at=at)
    await catalog.handled(await catalog.publish(rejected, user))
    row = await _organizer(catalog, 5)
    assert (row.verified, row.account_state) == (False, "banned")


async def _event_with_type(catalog: Catalog, max_count: int = 10) -> tuple[int, int]:
    async with catalog.db.engine.begin() as conn:
        location_id = await conn.scalar(
            insert(locations)
            .values(name="Hall", address="A", city="C", country="PL")
            .returning(locations.c.location_id)
        )
        event_id = await conn.scalar(
            insert(events)
            .values(
                organizer_id=1,
                name="Show",
                start_date=utcnow() + timedelta(days=3),
                end_date=utcnow() + timedelta(days=4),
                location_id=location_id,
                status="created",
            )
            .returning(events.c.event_id)
        )
        type_id = await conn.scalar(
            insert(ticket_types)
            .values(
                event_id=event_id,
                max_count=max_count,
                price=10,
                currency="USD",
                available_from=utcnow(),
            )
            .returning(ticket_types.c.type_id)
        )
    return event_id, type_id


def _purchased(ticket_id: int, event_id: int, type_id: int, owner_id: int) -> TicketPurchased:
    return TicketPurchased(
        ticket_id=ticket_id,
        order_id=1,
        type_id=type_id,
        event_id=event_id,
        owner_id=owner_id,
        price="10.00",
        currency="USD",
    )


def _refunded(ticket_id: int, event_id: int, owner_id: int) -> TicketRefunded:
    return TicketRefunded(
        ticket_id=ticket_id,
        owner_id=owner_id,
        event_id=event_id,
        amount="10.00",
        currency="USD",
        reason="event_cancelled",
    )


async def _counts(catalog: Catalog, type_id: int) -> tuple[int, int]:
    row = await catalog.one(
        select(ticket_types.c.sold, ticket_types.c.issued).where(ticket_types.c.type_id == type_id)
    )
    return row.sold, row.issued


async def test_sold_and_issued_counts_follow_purchases_and_refunds(catalog: Catalog) -> None:
    event_id, type_id = await _event_with_type(catalog)
    ids = [
        await catalog.publish(_purchased(t, event_id, type_id, 100 + t % 2), f"ticket-{t}")
        for t in (1, 2, 3)
    ]
    await catalog.handled(*ids)
    assert await _counts(catalog, type_id) == (3, 3)

    refund = await catalog.publish(_refunded(2, event_id, 100), "ticket-2")
    await catalog.handled(refund)
    assert await _counts(catalog, type_id) == (2, 3)  # issued never goes down

    # The same refund redelivered, and a second refund event of the same ticket: no effect.
    await catalog.publish(_refunded(2, event_id, 100), "ticket-2", event_id=refund)
    await catalog.handled(await catalog.publish(_refunded(2, event_id, 100), "ticket-2"))
    await catalog.handled(await catalog.publish(_purchased(4, event_id, type_id, 101), "ticket-4"))
    assert await _counts(catalog, type_id) == (3, 4)


async def test_refund_seen_before_the_purchase_counts_once_and_not_as_sold(
    catalog: Catalog,
) -> None:
    event_id, type_id = await _event_with_type(catalog)
    await catalog.handled(await catalog.publish(_refunded(7, event_id, 100), "ticket-7"))
    await catalog.handled(await catalog.publish(_purchased(7, event_id, type_id, 100), "ticket-7"))
    assert await _counts(catalog, type_id) == (0, 1)


async def test_transfer_moves_the_holder(catalog: Catalog) -> None:
    event_id, type_id = await _event_with_type(catalog)
    await catalog.handled(await catalog.publish(_purchased(9, event_id, type_id, 100), "ticket-9"))
    moved = TicketTransferred(ticket_id=9, listing_id=1, from_user_id=100, to_user_id=200)
    await catalog.handled(await catalog.publish(moved, "ticket-9"))
    row = await catalog.one(select(tickets).where(tickets.c.ticket_id == 9))
    assert (row.owner_id, row.valid, row.event_id) == (200, True, event_id)
    assert await _counts(catalog, type_id) == (1, 1)
    # The first sale applied again (a replay's reprocess, a retry) after a second one: the
    # ticket stays with its newest holder, who is the one a notification reaches.
    older = row.holder_seq
    resold = TicketTransferred(ticket_id=9, listing_id=2, from_user_id=200, to_user_id=300)
    await catalog.handled(await catalog.publish(resold, "ticket-9"))
    await catalog.handled(await catalog.publish(moved, "ticket-9", sequence=older))
    row = await catalog.one(select(tickets).where(tickets.c.ticket_id == 9))
    assert row.owner_id == 300


async def test_one_batch_of_several_types_counts_each_type(catalog: Catalog) -> None:
    """A batch's purchases of several types are counted in one statement, each type its own."""
    first_event, first = await _event_with_type(catalog)
    second_event, second = await _event_with_type(catalog)
    purchases = [
        _purchased(31, first_event, first, 100),
        _purchased(32, second_event, second, 100),
        _purchased(33, first_event, first, 101),
    ]
    async with catalog.db.unit_of_work() as uow:
        batch = [(p, _envelope(p, f"ticket-{p.ticket_id}")) for p in purchases]
        await on_ticket_purchased.many(batch, uow)  # type: ignore[attr-defined]
        await uow.commit()
    assert await _counts(catalog, first) == (2, 2)
    assert await _counts(catalog, second) == (1, 1)
    await catalog.handled(await catalog.publish(_refunded(31, first_event, 100), "ticket-31"))
    assert await _counts(catalog, first) == (1, 2)
    assert await _counts(catalog, second) == (1, 1)
