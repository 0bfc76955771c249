"""Ordering's reactions on a migrated schema in a scratch database, fed through the kernel
consumer exactly as the broker feeds it: a delivery twice (same envelope) and an operator
replay (same envelope, reprocessed past the inbox) change nothing the second time."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from itertools import count
from time import monotonic
from typing import Any

import asyncpg
import msgspec
import pytest
from sqlalchemy import func, select, text

from contracts.auth import UserRegistered
from contracts.catalog import (
    EventApproved,
    EventCancelled,
    EventCreated,
    TicketTypeCreated,
    TicketTypeUpdated,
)
from contracts.codec import encode
from contracts.envelope import Envelope, Event
from contracts.ordering import InventoryLimit, LimitAnswer
from contracts.resale import ListingCreated, ListingSold
from contracts.timeutil import utcnow
from services.kernel import broker, idempotency
from services.kernel.catchup import CatchUp, Head
from services.kernel.consumer import Consumer
from services.kernel.db import Database, _statement_name, execute_sql
from services.kernel.errors import BadRequest, Conflict, PaymentRequired
from services.kernel.payments import PaymentDeclined, SimulatedProvider
from services.kernel.upstream import Upstreams
from services.ordering import cart, checkout, holds, reactions, recovery
from services.ordering.consumers import HANDLERS
from services.ordering.models import (
    cart_items,
    carts,
    events,
    metadata,
    orders,
    outbox,
    payment_operations,
    ticket_types,
    tickets,
)
from tests.integration.conftest import migrated_harness

_sequence = count(1)
RULES = cart.CartRules(hold_for=timedelta(minutes=15), max_per_event=20)


def envelope(event: Event, aggregate_id: object, sequence: int | None = None) -> bytes:
    """As the relay sends it: a new id, the next sequence unless given (an older one: a
    replayed event's)."""
    return encode(
        Envelope(
            id=uuid.uuid4(),
            type=event.TYPE,
            version=event.VERSION,
            occurred_at=utcnow(),
            producer=event.TYPE.split(".")[0],
            aggregate_id=str(aggregate_id),
            sequence=next(_sequence) if sequence is None else sequence,
            payload=msgspec.Raw(encode(event)),
        )
    )


def event_created(event_id: int) -> EventCreated:
    """Catalog's new event, pending, five days from now."""
    now = utcnow()
    return EventCreated(
        event_id=event_id,
        organizer_id=1,
        name=f"Event {event_id}",
        start_date=now + timedelta(days=5),
        end_date=now + timedelta(days=6),
        location_id=1,
        location_name="Hall",
        status="pending",
    )


def type_saved(
    kind: type[TicketTypeCreated],
    type_id: int,
    event_id: int,
    capacity: int,
    price: str = "25.00",
    revision: int = 0,
) -> TicketTypeCreated:
    """Catalog's ticket type as created or changed, on sale since yesterday."""
    return kind(
        type_id=type_id,
        event_id=event_id,
        max_count=capacity,
        price=price,
        currency="USD",
        available_from=utcnow() - timedelta(days=1),
        description="Standard Ticket",
        revision=revision,
    )


def customer_registered(user_id: int) -> UserRegistered:
    """Auth's new active customer."""
    return UserRegistered(
        user_id=user_id,
        email=f"c{user_id}@example.com",
        role="customer",
        role_id=user_id,
        first_name="Cy",
        last_name="Buyer",
        login=f"c{user_id}",
        account_state="active",
    )


class Ordering:
    def __init__(self, url: str) -> None:
        self.db = Database(url, "ordering", metadata, pool_size=4)
        self.consumer = Consumer("ordering", self.db, broker.Names("unused"), HANDLERS, (50,))
        self.payments = SimulatedProvider(self.db, latency_ms=0)

    async def deliver(self, event: Event, aggregate_id: object = 1) -> bytes:
        body = envelope(event, aggregate_id)
        assert await self.consumer.handle(body) is True
        return body

    async def scalar(self, stmt: Any) -> Any:
        async with self.db.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def row(self, stmt: Any) -> Any:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(stmt)).one()

    async def count(self, table: Any, *where: Any) -> int:
        return int(await self.scalar(select(func.count()).select_from(table).where(*where)))

    async def events_of(self, type_: str) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(outbox.c.payload).where(outbox.c.type == type_))
            return [row.payload for row in rows]

    async def on_sale(self, event_id: int, type_id: int, capacity: int = 10) -> None:
        await self.deliver(event_created(event_id), event_id)
        await self.deliver(type_saved(TicketTypeCreated, type_id, event_id, capacity), event_id)
        await self.deliver(EventApproved(event_id=event_id, by=1), event_id)

    async def listed(self, listing_id: int, ticket_id: int, seller_id: int, event_id: int) -> None:
        """Resale's listing of a ticket at 40.00."""
        listing = ListingCreated(
            listing_id=listing_id, ticket_id=ticket_id, seller_id=seller_id, event_id=event_id,
            price="40.00", currency="USD",
        )  # fmt: skip
        await self.deliver(listing, ticket_id)

    async def customer(self, user_id: int) -> None:
        await self.deliver(customer_registered(user_id), user_id)

    async def buy(self, user_id: int, type_id: int, quantity: int) -> None:
        await cart.add_item(cart.AddToCart(user_id, type_id, quantity), self.db, RULES, utcnow())
        cmd = checkout.Checkout(user_id=user_id)
        assert await checkout.checkout(cmd, self.db, self.payments, RULES, utcnow, no_refresh)

    async def placed_order(
        self, user_id: int, type_id: int, quantity: int
    ) -> tuple[checkout.Checkout, checkout.PlacedOrder]:
        """A customer's order of `quantity` tickets of a type, placed (pending, not paid)."""
        await cart.add_item(cart.AddToCart(user_id, type_id, quantity), self.db, RULES, utcnow())
        cmd = checkout.Checkout(user_id=user_id)
        return cmd, await checkout._place(cmd, self.db, RULES, utcnow())


async def no_refresh() -> None:
    """A checkout's catch-up with catalog: nothing to wait for here."""


@pytest.fixture
async def ordering() -> AsyncIterator[Ordering]:
    async with migrated_harness("ordering", Ordering) as running:
        yield running


async def test_listing_sold_delivered_twice_and_replayed_transfers_exactly_once(
    ordering: Ordering,
) -> None:
    await ordering.on_sale(event_id=1, type_id=11)
    await ordering.customer(100)
    await ordering.customer(200)
    await ordering.buy(100, 11, 1)
    ticket_id = await ordering.scalar(select(tickets.c.ticket_id))
    old_code = await ordering.scalar(select(tickets.c.code))
    await ordering.listed(listing_id=5, ticket_id=ticket_id, seller_id=100, event_id=1)
    sold = ListingSold(
        listing_id=5, ticket_id=ticket_id, seller_id=100, buyer_id=200, price="40.00",
        currency="USD",
    )  # fmt: skip
    body = await ordering.deliver(sold, ticket_id)
    new_code = await ordering.scalar(select(tickets.c.code))
    assert await ordering.scalar(select(tickets.c.owner_id)) == 200
    assert new_code != old_code

    assert await ordering.consumer.handle(body) is False  # the broker delivers it again
    assert await ordering.consumer.handle(body, reprocess=True) is True  # an operator replay
    await ordering.deliver(sold, ticket_id)  # the same sale under a new envelope id

    assert await ordering.scalar(select(tickets.c.owner_id)) == 200
    assert await ordering.scalar(select(tickets.c.code)) == new_code
    transfers = await ordering.events_of("ordering.TicketTransferred")
    assert [(t["from_user_id"], t["to_user_id"]) for t in transfers] == [(100, 200)]
    assert await ordering.events_of("ordering.TicketTransferRefused") == []


async def test_listing_sold_after_check_in_is_refused_once(ordering: Ordering) -> None:
    await ordering.on_sale(event_id=2, type_id=21)
    await ordering.buy(100, 21, 1)
    async with ordering.db.engine.begin() as conn:
        await conn.execute(tickets.update().values(status="used"))
    sold = ListingSold(
        listing_id=9, ticket_id=1, seller_id=100, buyer_id=200, price="1.00", currency="USD"
    )
    body = await ordering.deliver(sold, 1)
    await ordering.consumer.handle(body, reprocess=True)
    assert await ordering.scalar(select(tickets.c.owner_id)) == 100
    refused = await ordering.events_of("ordering.TicketTransferRefused")
    assert [r["reason"] for r in refused] == ["ticket_checked_in"]


async def test_event_cancelled_twice_and_replayed_refunds_each_purchase_once(
    ordering: Ordering,
) -> None:
    await ordering.on_sale(event_id=3, type_id=31, capacity=10)
    await ordering.customer(100)
    await ordering.buy(100, 31, 2)
    await ordering.buy(300, 31, 1)
    # someone is still holding tickets
    await cart.add_item(cart.AddToCart(400, 31, 3), ordering.db, RULES, utcnow())

    cancelled = EventCancelled(event_id=3, by=1, at=utcnow())
    body = await ordering.deliver(cancelled, 3)
    assert await ordering.consumer.handle(body) is False
    assert await ordering.consumer.handle(body, reprocess=True) is True
    await ordering.deliver(cancelled, 3)

    assert await ordering.count(tickets, tickets.c.status == "refunded") == 3
    assert await ordering.count(tickets, tickets.c.status != "refunded") == 0
    refunds = await ordering.count(payment_operations, payment_operations.c.kind == "refund")
    assert refunds == 2  # one per order, never repeated
    refunded = await ordering.scalar(
        select(func.sum(payment_operations.c.amount)).where(payment_operations.c.kind == "refund")
    )
    assert refunded == Decimal("75.00")
    sold = await ordering.scalar(select(func.array_agg(tickets.c.ticket_id)))
    voided = await ordering.events_of("ordering.TicketRefunded")
    assert sorted(r["ticket_id"] for r in voided) == sorted(sold)  # each ticket once
    assert await ordering.count(orders, orders.c.status == "refunded") == 2
    held = await ordering.scalar(select(ticket_types.c.held).where(ticket_types.c.type_id == 31))
    assert held == 0  # holds released, cart lines removed
    assert await ordering.count(carts) == 3
    # Each hold released once: two by the sales, the one left in a cart by the cancellation.
    released = await ordering.events_of("ordering.HoldReleased")
    assert sorted(e["user_id"] for e in released) == [100, 300, 400]


async def test_a_cancellation_that_died_after_a_refund_is_retried_with_the_same_tickets(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancellation's handler refunded the order at the processor, then died before its
    commit; a resale of one of the order's tickets, waiting for the ticket's row, came next.
    It is refused (the event's cancellation was committed before any money moved), so the
    retry refunds the same holder the same amount under the same key. Before, the ticket
    went to the resale buyer, the retry found it resold: the seller kept its refund and was
    paid for it, and the buyer was refunded too."""
    await ordering.on_sale(event_id=13, type_id=131, capacity=5)
    await ordering.customer(100)
    await ordering.customer(200)
    await ordering.buy(100, 131, 1)
    ticket_id = await ordering.scalar(select(tickets.c.ticket_id))
    await ordering.listed(listing_id=15, ticket_id=ticket_id, seller_id=100, event_id=13)

    class DiesAfterRefund(SimulatedProvider):
        async def refund(self, payment_id: str, amount: Decimal, *, idempotency_key: str) -> None:
            await super().refund(payment_id, amount, idempotency_key=idempotency_key)
            raise RuntimeError("the process died here")

    monkeypatch.setattr(reactions, "payment_provider", lambda db: DiesAfterRefund(db, 0))
    cancelled = envelope(EventCancelled(event_id=13, by=1, at=utcnow()), 13)
    with pytest.raises(RuntimeError, match="died here"):
        await ordering.consumer.handle(cancelled)
    monkeypatch.undo()
    await ordering.deliver(
        ListingSold(
            listing_id=15, ticket_id=ticket_id, seller_id=100, buyer_id=200, price="40.00",
            currency="USD",
        ),
        ticket_id,
    )  # fmt: skip
    assert await ordering.scalar(select(tickets.c.owner_id)) == 100
    refused = await ordering.events_of("ordering.TicketTransferRefused")
    assert [r["reason"] for r in refused] == ["event_cancelled"]
    assert await ordering.consumer.handle(cancelled) is True  # the broker's redelivery
    refunds = await ordering.events_of("ordering.TicketRefunded")
    assert [(r["owner_id"], r["amount"], r["reason"]) for r in refunds] == [
        (100, "25.00", "event_cancelled")
    ]
    refunded = await ordering.scalar(
        select(func.sum(payment_operations.c.amount)).where(payment_operations.c.kind == "refund")
    )
    assert refunded == Decimal("25.00")


async def test_a_cancellation_in_a_batch_is_applied_alone_without_waiting_for_the_batch(
    ordering: Ordering,
) -> None:
    """The cancellation commits the event's status on a transaction of its own first: in a
    batch whose earlier event holds that row, it would wait for its own batch (until the lock
    timeout). It fails the batch at once instead, and each event is then applied alone."""
    await ordering.on_sale(event_id=16, type_id=161)
    bodies = [
        envelope(EventApproved(event_id=16, by=1), 16),
        envelope(EventCancelled(event_id=16, by=1, at=utcnow()), 16),
    ]
    started = monotonic()
    assert await ordering.consumer._apply_batch(bodies, reprocess=False) is False
    assert monotonic() - started < 1.0  # not the 2 s lock timeout
    for body in bodies:
        assert await ordering.consumer.handle(body) is True
    assert await ordering.scalar(select(events.c.status).where(events.c.event_id == 16)) == (
        "cancelled"
    )


async def test_a_cancellation_waits_for_a_sale_that_is_completing(ordering: Ordering) -> None:
    """The completion's first statement share-locks the order's events: a cancellation
    arriving while the sale waits to commit (here for its type's inventory row, which its
    COMMIT takes) waits for the sale to commit and then refunds it, once; it never slips in
    between the sale's checks and its commit."""
    await ordering.on_sale(event_id=4, type_id=41)
    await ordering.customer(100)
    cmd, placed = await ordering.placed_order(100, 41, 1)
    inventory = "SELECT 1 FROM ordering.ticket_types WHERE type_id = 41 FOR NO KEY UPDATE"
    async with _completing_behind(ordering, inventory, cmd, placed) as (sale, sale_waits):
        cancelled = EventCancelled(event_id=4, by=1, at=utcnow())
        cancel = asyncio.create_task(ordering.deliver(cancelled, 4))
        # Its first step, marking the event cancelled, waits for the sale's share lock.
        cancel_waits = await _waiting_query(ordering, besides=sale_waits)
        assert cancel_waits.startswith("UPDATE ordering.events SET status")
        assert not cancel.done()
    await asyncio.wait_for(asyncio.gather(sale, cancel), 10)
    order = select(orders.c.status).where(orders.c.order_id == placed.order_id)
    assert await ordering.scalar(order) == "refunded"
    assert await ordering.count(tickets, tickets.c.order_id == placed.order_id) == 1
    assert await ordering.count(tickets, tickets.c.status != "refunded") == 0
    assert await ordering.count(payment_operations, payment_operations.c.kind == "refund") == 1
    refunded = select(payment_operations.c.amount).where(payment_operations.c.kind == "refund")
    assert await ordering.scalar(refunded) == placed.total


async def _waiting_query(ordering: Ordering, besides: str = "") -> str:
    """The statement text of the one backend of this database waiting for a lock (besides
    the one already known to wait in `besides`), once it waits."""
    waiting = text(
        "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database() AND query <> :besides"
    ).bindparams(besides=besides)
    for _ in range(200):
        query = await ordering.scalar(waiting)
        if query is not None:
            return str(query)
        await asyncio.sleep(0.01)
    raise AssertionError("nothing waited for a lock")


@asynccontextmanager
async def _completing_behind(
    ordering: Ordering, statement: str, cmd: checkout.Checkout, placed: checkout.PlacedOrder
) -> AsyncIterator[tuple[asyncio.Task[None], str]]:
    """The completion of `placed` (paid), started while another transaction holds the rows
    `statement` locks (or changes), which commits as the block ends; the completion waits
    for them meanwhile: its task and the statement it waits in."""
    payment_id = await ordering.payments.charge(
        idempotency_key=f"order-{placed.order_id}",
        amount=placed.total,
        currency=placed.currency,
        token=None,
    )
    async with ordering.db.engine.connect() as other:
        await other.exec_driver_sql(statement)
        done = asyncio.create_task(
            checkout._complete(ordering.db, cmd, placed, payment_id, utcnow())
        )
        waiting = await _waiting_query(ordering)
        assert not done.done()
        yield done, waiting
        await other.commit()


async def _complete_behind(
    ordering: Ordering, statement: str, cmd: checkout.Checkout, placed: checkout.PlacedOrder
) -> tuple[asyncio.Task[None], str]:
    """`_completing_behind`, the other transaction committing once the completion waits."""
    async with _completing_behind(ordering, statement, cmd, placed) as completing:
        return completing


def _messages_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every message sent to PostgreSQL with the simple query protocol (each COMMIT, with the
    statements that go with it) from now until `monkeypatch` is undone."""
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def recording(self: asyncpg.Connection, query: str, *args: object, **kw: Any) -> str:
        sent.append(query)
        return await execute(self, query, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(asyncpg.Connection, "execute", recording)
    return sent


def _is_commit_message(query: str) -> bool:
    """PostgreSQL shows the first kilobyte of a statement: the COMMIT's message begins with
    the statements prepared for it (UnitOfWork.at_commit; its end is tested in
    test_unit_of_work.py)."""
    return query.lstrip().startswith("EXECUTE resellio_")


async def test_a_claim_refused_at_the_commit_leaves_nothing_behind(ordering: Ordering) -> None:
    """The claim travels with the COMMIT: when the last ticket goes to someone else between
    the add's read and its claim, the add is refused whole (no line, no hold, no event)."""
    await ordering.on_sale(event_id=5, type_id=51, capacity=1)
    await ordering.customer(100)
    async with ordering.db.engine.connect() as other:
        await other.exec_driver_sql(
            "SELECT 1 FROM ordering.ticket_types WHERE type_id = 51 FOR NO KEY UPDATE"
        )
        add = asyncio.create_task(
            cart.add_item(cart.AddToCart(100, 51, 1), ordering.db, RULES, utcnow())
        )
        for _ in range(200):  # until the add's claim waits for the row this one holds
            if await ordering.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
                break
            await asyncio.sleep(0.01)
        assert not add.done()
        # The add waits for the row in the message that commits its transaction (the one
        # that begins with the transaction's outbox rows), not in a statement before it.
        assert _is_commit_message(await _waiting_query(ordering))
        await other.exec_driver_sql(
            "UPDATE ordering.ticket_types SET held = held + 1 WHERE type_id = 51"
        )
        await other.commit()
        with pytest.raises(BadRequest, match="Only 0 left"):
            await add
    assert await ordering.count(carts) == 0
    assert await ordering.scalar(select(func.count()).select_from(cart_items)) == 0
    assert await ordering.scalar(select(ticket_types.c.held)) == 1
    assert await ordering.events_of("ordering.HoldPlaced") == []


async def test_an_add_refused_twice_answers_what_is_left_and_leaves_nothing(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others took the tickets between the add's read and its claim, twice (here: every claim
    asks for more than exists): the add answers with the offer as it is then, and leaves no
    line, hold or event behind."""
    await ordering.on_sale(event_id=7, type_id=71, capacity=5)
    await ordering.customer(100)
    hold = holds.hold
    monkeypatch.setattr(holds, "hold", lambda type_id, quantity: hold(type_id, quantity + 5))
    with pytest.raises(BadRequest, match="Only 5 left"):
        await cart.add_item(cart.AddToCart(100, 71, 1), ordering.db, RULES, utcnow())
    assert await ordering.scalar(select(func.count()).select_from(cart_items)) == 0
    assert await ordering.scalar(select(ticket_types.c.held)) == 0
    assert await ordering.events_of("ordering.HoldPlaced") == []


async def test_the_sale_waits_for_the_type_row_only_in_the_commit_message(
    ordering: Ordering,
) -> None:
    """Every buyer of a type queues for its inventory row: the completion takes it in the
    message that commits, so it never holds it across a round trip to ordering."""
    await ordering.on_sale(event_id=8, type_id=81, capacity=2)
    await ordering.customer(100)
    cmd, placed = await ordering.placed_order(100, 81, 1)
    done, waiting = await _complete_behind(
        ordering,
        "SELECT 1 FROM ordering.ticket_types WHERE type_id = 81 FOR NO KEY UPDATE",
        cmd,
        placed,
    )
    await done
    assert _is_commit_message(waiting)
    assert await ordering.count(tickets) == 1


async def test_an_order_too_large_for_one_payment_is_declined_not_a_500(
    ordering: Ordering,
) -> None:
    """R5 bounds tickets per event, not per cart: 101 tickets at the highest price total more
    than one payment moves (and an order's total holds). Declined (402) before anything is
    recorded or charged; the cart and its hold are kept, as for any declined card."""
    many = cart.CartRules(hold_for=timedelta(minutes=15), max_per_event=200)
    await ordering.customer(600)
    await ordering.deliver(event_created(601), 601)
    await ordering.deliver(type_saved(TicketTypeCreated, 611, 601, 200, "99999999.99"), 601)
    await ordering.deliver(EventApproved(event_id=601, by=1), 601)
    await cart.add_item(cart.AddToCart(600, 611, 101), ordering.db, many, utcnow())
    cmd = checkout.Checkout(user_id=600)
    with pytest.raises(PaymentRequired) as declined:
        await checkout.checkout(cmd, ordering.db, ordering.payments, many, utcnow, no_refresh)
    assert declined.value.detail == "Payment declined"
    assert await ordering.count(orders, orders.c.user_id == 600) == 0
    assert await ordering.count(payment_operations) == 0
    assert (
        await ordering.scalar(select(cart_items.c.quantity).where(cart_items.c.user_id == 600))
        == 101
    )
    assert (
        await ordering.scalar(select(ticket_types.c.held).where(ticket_types.c.type_id == 611))
        == 101
    )
    assert (
        await ordering.scalar(select(carts.c.checkout_started_at).where(carts.c.user_id == 600))
        is None
    )
    # The processor itself declines such an amount too.
    with pytest.raises(PaymentDeclined):
        await ordering.payments.charge(
            idempotency_key="too-large",
            amount=Decimal("10099999998.99"),
            currency="USD",
            token=None,
        )


async def test_a_charge_whose_answer_is_lost_leaves_the_order_to_recovery(
    ordering: Ordering,
) -> None:
    """The processor took the money but its answer never came: the checkout cannot know, so
    the order stays pending (not failed), and crash recovery finds the charge and completes
    it: the customer gets the tickets paid for."""
    await ordering.on_sale(event_id=9, type_id=91, capacity=3)
    await ordering.customer(100)
    await cart.add_item(cart.AddToCart(100, 91, 2), ordering.db, RULES, utcnow())

    class AnswerLost(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            await super().charge(**kw)
            raise ConnectionResetError("the processor's answer was lost")

    cmd = checkout.Checkout(user_id=100)
    lost = AnswerLost(ordering.db, latency_ms=0)
    with pytest.raises(ConnectionResetError):
        await checkout.checkout(cmd, ordering.db, lost, RULES, utcnow, no_refresh)
    assert await ordering.count(orders, orders.c.status == "pending") == 1
    assert await ordering.count(tickets) == 0
    assert await recovery.recover_stalled(ordering.db, ordering.payments, timedelta(0)) == 1
    assert await ordering.count(orders, orders.c.status == "completed") == 1
    assert await ordering.count(tickets) == 2


async def test_a_checkout_that_gave_the_money_back_and_died_stays_failed(
    ordering: Ordering,
) -> None:
    """The customer removed the line while the card was charged: the checkout refunded the
    whole charge, then died before failing the order. The type is back in the cart by the
    time recovery comes: recovery finds the charge refunded and fails the order, where it
    completed it before, issuing tickets for money given back."""
    await ordering.on_sale(event_id=12, type_id=121, capacity=5)
    await ordering.customer(100)
    line = await cart.add_item(cart.AddToCart(100, 121, 2), ordering.db, RULES, utcnow())

    class DiesAfterRefund(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            payment_id = await super().charge(**kw)
            async with ordering.db.unit_of_work() as uow:
                await cart.remove_item(100, line["cart_item_id"], uow, shown="")
            return payment_id

        async def refund(self, payment_id: str, amount: Decimal, *, idempotency_key: str) -> None:
            await super().refund(payment_id, amount, idempotency_key=idempotency_key)
            raise ConnectionResetError("the process died here")

    cmd = checkout.Checkout(user_id=100)
    dying = DiesAfterRefund(ordering.db, latency_ms=0)
    with pytest.raises(ConnectionResetError):
        await checkout.checkout(cmd, ordering.db, dying, RULES, utcnow, no_refresh)
    assert await ordering.count(orders, orders.c.status == "pending") == 1
    await cart.add_item(cart.AddToCart(100, 121, 2), ordering.db, RULES, utcnow())
    assert await recovery.recover_stalled(ordering.db, ordering.payments, timedelta(0)) == 1
    assert await ordering.count(orders, orders.c.status == "failed") == 1
    assert await ordering.count(tickets) == 0
    assert await ordering.scalar(select(ticket_types.c.sold)) == 0
    assert await ordering.scalar(select(ticket_types.c.held)) == 2  # the line added back


async def test_finishing_a_dead_checkouts_order_leaves_a_later_checkouts_flag(
    ordering: Ordering,
) -> None:
    """A checkout died after placing its order; once its flag was stale a new checkout of the
    cart took it over. Recovery failing the dead one's order leaves the new one's flag, so a
    third checkout meanwhile is still a 409 (before, it cleared it, and the third could charge
    the card a second time). The new one's completion clears its own flag."""
    await ordering.on_sale(event_id=14, type_id=141, capacity=5)
    await ordering.customer(100)
    await cart.add_item(cart.AddToCart(100, 141, 1), ordering.db, RULES, utcnow())
    cmd = checkout.Checkout(user_id=100)
    died = utcnow()
    dead = await checkout._place(cmd, ordering.db, RULES, died)
    later = died + holds.CHECKOUT_STALE + timedelta(seconds=1)
    running = await checkout._place(cmd, ordering.db, RULES, later)
    await checkout._fail(ordering.db, 100, dead.order_id, "checkout_interrupted")
    with pytest.raises(Conflict, match="Checkout already in progress"):
        await checkout._place(cmd, ordering.db, RULES, later + timedelta(seconds=1))
    await checkout._complete(ordering.db, cmd, running, "pay_running", later)
    with pytest.raises(BadRequest, match="Shopping cart is empty"):
        await checkout._place(cmd, ordering.db, RULES, later + timedelta(seconds=2))
    statuses = {
        o: await ordering.scalar(select(orders.c.status).where(orders.c.order_id == o))
        for o in (dead.order_id, running.order_id)
    }
    assert statuses == {dead.order_id: "failed", running.order_id: "completed"}


async def test_a_checkout_resuming_after_recovery_finished_its_order_changes_nothing(
    ordering: Ordering,
) -> None:
    """A checkout stalled between its charge and its completion past the recovery's
    threshold: recovery completes the order with that charge; the checkout then resumes and
    answers completed, with no second set of tickets, no refund, the order still completed
    (before, it found its cart lines gone, refunded the money and marked the order failed,
    the tickets still valid). A failure after the fact changes nothing either."""
    await ordering.on_sale(event_id=10, type_id=101, capacity=5)
    await ordering.customer(100)
    await cart.add_item(cart.AddToCart(100, 101, 2), ordering.db, RULES, utcnow())
    resumed: list[bool] = []

    class Stalled(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            payment_id = await super().charge(**kw)
            # Stalled here long enough for recovery to find the order and finish it.
            assert await recovery.recover_stalled(ordering.db, self, timedelta(0)) == 1
            resumed.append(True)
            return payment_id

    cmd = checkout.Checkout(user_id=100)
    stalled = Stalled(ordering.db, latency_ms=0)
    assert await checkout.checkout(cmd, ordering.db, stalled, RULES, utcnow, no_refresh)
    assert resumed == [True]
    assert await ordering.count(orders, orders.c.status == "completed") == 1
    assert await ordering.count(tickets) == 2
    assert await ordering.scalar(select(ticket_types.c.sold)) == 2
    assert await ordering.count(payment_operations, payment_operations.c.kind == "refund") == 0
    order_id = await ordering.scalar(select(orders.c.order_id))
    await checkout._fail(ordering.db, 100, order_id, "late")
    assert await ordering.count(orders, orders.c.status == "completed") == 1
    assert await ordering.events_of("ordering.OrderFailed") == []


async def test_a_sale_refused_at_the_commit_issues_nothing(ordering: Ordering) -> None:
    """The capacity lowered below the held line between placing and completing the order:
    the completion is refused whole (no ticket, the hold still there)."""
    await ordering.on_sale(event_id=6, type_id=61, capacity=2)
    await ordering.customer(100)
    cmd, placed = await ordering.placed_order(100, 61, 2)
    async with ordering.db.engine.begin() as conn:
        await conn.execute(ticket_types.update().values(max_count=1))
    with pytest.raises(BadRequest, match="Only 1 left"):
        await checkout._complete(ordering.db, cmd, placed, "pay_x", utcnow())
    assert await ordering.count(tickets) == 0
    assert await ordering.scalar(select(ticket_types.c.held)) == 2
    assert await ordering.scalar(select(ticket_types.c.sold)) == 0
    assert await ordering.events_of("ordering.TicketPurchased") == []
    assert await ordering.count(orders, orders.c.status == "completed") == 0


async def _limit(ordering: Ordering, type_id: int, revision: int, max_count: int) -> LimitAnswer:
    async with ordering.db.transaction() as uow:
        answer = await holds.limit(uow, type_id, InventoryLimit(revision, max_count))
        assert answer is not None
        await uow.commit()
        return answer


async def test_catalogs_limit_holds_until_an_event_as_new_brings_a_capacity(
    ordering: Ordering,
) -> None:
    """Catalog limits the type before it commits a lower capacity (revision 2). A change it
    committed earlier (revision 1, a higher capacity) arriving after the limit does not raise
    the capacity again; revision 2's event and any later one do apply."""
    await ordering.on_sale(event_id=9, type_id=91, capacity=10)
    assert await _limit(ordering, 91, revision=2, max_count=4) == LimitAnswer(True, 0)
    capacity = select(ticket_types.c.max_count, ticket_types.c.price)
    await ordering.deliver(type_saved(TicketTypeUpdated, 91, 9, 8, "27.00", revision=1), 9)
    assert tuple(await ordering.row(capacity)) == (4, Decimal("27.00"))
    await ordering.deliver(type_saved(TicketTypeUpdated, 91, 9, 4, "30.00", revision=2), 9)
    assert tuple(await ordering.row(capacity)) == (4, Decimal("30.00"))
    await ordering.deliver(type_saved(TicketTypeUpdated, 91, 9, 12, "30.00", revision=3), 9)
    assert tuple(await ordering.row(capacity)) == (12, Decimal("30.00"))


async def test_catalogs_limit_below_what_is_sold_changes_nothing(ordering: Ordering) -> None:
    await ordering.on_sale(event_id=10, type_id=101, capacity=5)
    await ordering.customer(100)
    await ordering.buy(100, 101, 3)
    assert await _limit(ordering, 101, revision=1, max_count=2) == LimitAnswer(False, 3)
    assert await ordering.scalar(select(ticket_types.c.max_count)) == 5
    assert await _limit(ordering, 101, revision=1, max_count=3) == LimitAnswer(True, 3)
    assert await ordering.scalar(select(ticket_types.c.max_count)) == 3
    async with ordering.db.transaction() as uow:
        assert await holds.limit(uow, 999, InventoryLimit(1, 0)) is None  # not known here


async def test_a_type_applied_between_the_limit_and_its_refusal_is_limited_not_refused(
    ordering: Ordering,
) -> None:
    """The type's creation lands just after the limit's UPDATE found no row, before the read
    of why it was refused: that read finds the row, nothing sold, not stale. The limit is not
    refused "below what is sold (0)" (catalog's 400 for a capacity lowered a moment after the
    type was created): it counts as not known yet, and the endpoint's next try applies it."""

    async with ordering.db.transaction() as uow:
        sent = uow.fetchval

        async def fetchval(query: str, *args: Any) -> Any:
            value = await sent(query, *args)
            if query == holds._LIMIT:
                await ordering.on_sale(event_id=12, type_id=121, capacity=10)
            return value

        uow.fetchval = fetchval  # type: ignore[method-assign]
        assert await holds.limit(uow, 121, InventoryLimit(1, 4)) is None
    assert await _limit(ordering, 121, revision=1, max_count=4) == LimitAnswer(True, 0)
    assert await ordering.scalar(select(ticket_types.c.max_count)) == 4


async def test_a_limit_that_arrives_after_a_later_one_changes_nothing(ordering: Ordering) -> None:
    """Catalog gave up on a limit (revision 5, capacity 8: ordering was slow) and rolled back;
    the retried change (revision 7, capacity 3) was limited and committed. The first limit,
    arriving last, must not raise the capacity to 8."""
    await ordering.on_sale(event_id=11, type_id=111, capacity=10)
    assert await _limit(ordering, 111, revision=7, max_count=3) == LimitAnswer(True, 0)
    assert await _limit(ordering, 111, revision=5, max_count=8) == LimitAnswer(False, 0, True)
    await ordering.deliver(type_saved(TicketTypeUpdated, 111, 11, 8, revision=5), 11)
    assert await ordering.scalar(select(ticket_types.c.max_count)) == 3
    await ordering.deliver(type_saved(TicketTypeUpdated, 111, 11, 9, revision=9), 11)
    assert await ordering.scalar(select(ticket_types.c.max_count)) == 9


async def _key_row(ordering: Ordering, key: str) -> Any:
    async with ordering.db.driver() as conn:
        return await conn.fetchrow(
            "SELECT state, status_code, body FROM ordering.idempotency_keys WHERE key = $1", key
        )


async def test_a_checkout_stores_its_answer_in_the_commit_of_its_sale(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under an Idempotency-Key the completed checkout's answer is written by the sale's own
    COMMIT: a retry after a crash right after the sale finds the answer, never a key left in
    progress; a sale refused at the commit leaves no answer (the request stores its 400)."""
    await ordering.on_sale(event_id=10, type_id=101, capacity=3)
    await ordering.customer(100)
    await cart.add_item(cart.AddToCart(100, 101, 2), ordering.db, RULES, utcnow())
    scope = (100, "POST", "/api/cart/checkout", "key-sold")
    assert await idempotency.IdempotencyKeys(ordering.db).claim(*scope, "print") is None
    with idempotency.claimed(scope) as claim:
        cmd = checkout.Checkout(user_id=100)
        sent = _messages_sent(monkeypatch)
        await checkout.checkout(cmd, ordering.db, ordering.payments, RULES, utcnow, no_refresh)
        monkeypatch.undo()
        stored = await _key_row(ordering, "key-sold")
        assert (stored.state, stored.status_code, bytes(stored.body)) == ("done", 200, b"true")
        assert claim.answered
    # The answer's one write travels in the message that completes the order and commits.
    store = _statement_name(idempotency._statements("ordering")["store"])
    [answered] = [m for m in sent if f"EXECUTE {store}(" in m]
    assert f"{execute_sql(store, (*scope, 200, b'true'))};" in answered
    assert f"EXECUTE {_statement_name(checkout._COMPLETE)}(" in answered
    assert answered.endswith("COMMIT;")

    await ordering.customer(101)
    cmd, placed = await ordering.placed_order(101, 101, 1)
    scope = (101, "POST", "/api/cart/checkout", "key-refused")
    assert await idempotency.IdempotencyKeys(ordering.db).claim(*scope, "print") is None
    async with ordering.db.engine.begin() as conn:
        await conn.execute(ticket_types.update().values(max_count=2))
    with idempotency.claimed(scope) as claim, pytest.raises(BadRequest, match="Only 0 left"):
        await checkout._complete(ordering.db, cmd, placed, "pay_z", utcnow())
    assert not claim.answered
    assert (await _key_row(ordering, "key-refused")).state == "in_progress"


async def test_recovery_answers_the_key_of_the_checkout_it_settles(ordering: Ordering) -> None:
    """A keyed checkout whose outcome its request never learnt (the processor's answer lost,
    or the request cut off by a shutdown mid-charge) leaves its key held, as a crash would;
    recovery, settling the order, answers it: completed, a retry under the key gets the 200
    (before, the key was freed or left in progress, and a retry once it went stale was
    answered "Shopping cart is empty", or checked out the cart again and charged the card a
    second time); failed, the key is freed and a retry is a new attempt."""
    await ordering.on_sale(event_id=15, type_id=151, capacity=9)
    keys = idempotency.IdempotencyKeys(ordering.db)
    path = "/api/cart/checkout"

    class AnswerLost(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            await super().charge(**kw)
            raise ConnectionResetError("the processor's answer was lost")

    class CutOff(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            await super().charge(**kw)
            raise asyncio.CancelledError  # the shutdown's cancellation, after the charge

    class NeverCharged(SimulatedProvider):
        async def charge(self, **kw: Any) -> str:
            raise asyncio.CancelledError  # cut off before the processor heard of it

    async def keyed_checkout(user: int, key: str, provider: SimulatedProvider) -> Any:
        """As `idempotent` runs a checkout: claimed with its pending order, else claimed first."""
        scope = (user, "POST", path, key)

        async def produce() -> bool:
            cmd = checkout.Checkout(user_id=user)
            return await checkout.checkout(cmd, ordering.db, provider, RULES, utcnow, no_refresh)

        try:
            return await idempotency._produce(keys, scope, "print", produce, deferred=True)
        except asyncpg.UniqueViolationError:
            return await keys.claim(*scope, "print")

    for user, key, provider, failure in (
        (150, "lost", AnswerLost, ConnectionResetError),
        (151, "cut", CutOff, asyncio.CancelledError),
        (152, "uncharged", NeverCharged, asyncio.CancelledError),
    ):
        await ordering.customer(user)
        await cart.add_item(cart.AddToCart(user, 151, 1), ordering.db, RULES, utcnow())
        with pytest.raises(failure):
            await keyed_checkout(user, key, provider(ordering.db, latency_ms=0))
        assert (await _key_row(ordering, key)).state == "in_progress"
        with pytest.raises(Conflict, match="in progress"):
            await keys.claim(user, "POST", path, key, "print")
    assert await recovery.recover_stalled(ordering.db, ordering.payments, timedelta(0)) == 3
    for user, key in ((150, "lost"), (151, "cut")):
        stored = await _key_row(ordering, key)
        assert (stored.state, stored.status_code, bytes(stored.body)) == ("done", 200, b"true")
        await cart.add_item(cart.AddToCart(user, 151, 1), ordering.db, RULES, utcnow())
        retry = await keyed_checkout(user, key, ordering.payments)
        assert retry == (200, b"true")  # the stored answer, nothing done again
    assert await _key_row(ordering, "uncharged") is None  # failed, nothing taken: freed
    async with ordering.db.driver() as conn:
        statuses = await conn.fetch("SELECT status FROM ordering.orders ORDER BY user_id")
        charged = await conn.fetchval(
            "SELECT count(*) FROM ordering.payments WHERE state = 'captured'"
        )
    assert [row[0] for row in statuses] == ["completed", "completed", "failed"]
    assert charged == 2  # once each: the retries charged nothing
    assert await ordering.count(tickets) == 2
    assert await ordering.count(cart_items) == 3  # the retries' new lines wait, uncharged


async def test_a_checkout_claims_its_key_with_its_pending_order(ordering: Ordering) -> None:
    """A checkout that claims its Idempotency-Key with its effect (`claim_in`): the key is
    held once the pending order commits, and nothing is placed under a key held before (the
    request then falls back to claiming it first)."""
    await ordering.on_sale(event_id=12, type_id=121, capacity=5)
    await ordering.customer(100)
    scope = (100, "POST", "/api/cart/checkout", "key-with-order")
    cmd = checkout.Checkout(user_id=100)

    async def run() -> bool:
        return await checkout.checkout(
            cmd, ordering.db, ordering.payments, RULES, utcnow, no_refresh
        )

    with idempotency.claimed(scope, "print", deferred=True) as claim:
        with pytest.raises(BadRequest, match="Shopping cart is empty"):
            await run()
        assert not claim.held  # rolled back with the checkout that did nothing
    assert await _key_row(ordering, "key-with-order") is None
    await cart.add_item(cart.AddToCart(100, 121, 1), ordering.db, RULES, utcnow())
    with idempotency.claimed(scope, "print", deferred=True) as claim:
        assert await run()
        assert claim.held and claim.answered
    stored = await _key_row(ordering, "key-with-order")
    assert (stored.state, stored.status_code, bytes(stored.body)) == ("done", 200, b"true")
    await cart.add_item(cart.AddToCart(100, 121, 1), ordering.db, RULES, utcnow())
    with idempotency.claimed(scope, "print", deferred=True) as claim:
        with pytest.raises(asyncpg.UniqueViolationError):
            await run()
        assert not claim.held
    assert await ordering.count(orders) == 1
    assert await ordering.count(cart_items) == 1  # the new line waits, untouched


async def test_an_order_of_several_lines_is_sold_from_holds_that_grew_meanwhile(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion sells each line of the order from its hold: a line whose hold grew
    after the order was placed (an add during the payment) keeps the rest in the cart; a line
    sold whole goes. One ticket per unit, each with its own code."""
    await ordering.on_sale(event_id=11, type_id=111, capacity=10)
    await ordering.on_sale(event_id=12, type_id=121, capacity=10)
    await ordering.customer(100)
    await cart.add_item(cart.AddToCart(100, 121, 1), ordering.db, RULES, utcnow())
    cmd, placed = await ordering.placed_order(100, 111, 2)
    await cart.add_item(cart.AddToCart(100, 111, 1), ordering.db, RULES, utcnow())
    sent = _messages_sent(monkeypatch)
    await checkout._complete(ordering.db, cmd, placed, "pay_m", utcnow())
    monkeypatch.undo()
    issued = await ordering.scalar(
        select(func.array_agg(tickets.c.type_id.distinct())).where(
            tickets.c.order_id == placed.order_id
        )
    )
    assert sorted(issued) == [111, 121]
    assert await ordering.count(tickets, tickets.c.type_id == 111) == 2
    assert await ordering.count(tickets, tickets.c.type_id == 121) == 1
    assert await ordering.scalar(select(func.count(tickets.c.code.distinct()))) == 3
    async with ordering.db.engine.connect() as conn:
        left = (await conn.execute(select(cart_items.c.type_id, cart_items.c.quantity))).all()
        inventory = dict(
            (await conn.execute(select(ticket_types.c.type_id, ticket_types.c.sold))).all()
        )
    assert [tuple(r) for r in left] == [(111, 1)]
    assert inventory == {111: 2, 121: 1}
    order = await ordering.scalar(
        select(orders.c.status).where(orders.c.order_id == placed.order_id)
    )
    assert order == "completed"
    mail = await ordering.scalar(text("SELECT body FROM ordering.mail_queue"))
    assert "2 x Event 11 - Standard Ticket at 25.00 USD" in mail
    assert "1 x Event 12 - Standard Ticket at 25.00 USD" in mail
    # Issued with the COMMIT under the ids drawn with the lines, which the events name; each
    # code drawn by PostgreSQL (244 random bits, URL-safe), none of them in the message.
    async with ordering.db.engine.connect() as conn:
        issued_rows = (
            await conn.execute(select(tickets.c.ticket_id, tickets.c.type_id, tickets.c.code))
        ).all()
    (completed,) = await ordering.events_of("ordering.OrderCompleted")
    assert completed["ticket_ids"] == sorted(r.ticket_id for r in issued_rows)
    purchased = await ordering.events_of("ordering.TicketPurchased")
    assert {(e["ticket_id"], e["type_id"]) for e in purchased} == {
        (r.ticket_id, r.type_id) for r in issued_rows
    }
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", r.code) for r in issued_rows)
    assert any(q.endswith("COMMIT;") and str(issued_rows[0].ticket_id) in q for q in sent)
    assert not any(r.code in q for q in sent for r in issued_rows)


async def test_a_sale_waiting_for_a_cancellation_sees_it(ordering: Ordering) -> None:
    """The other way round: a cancellation holds the event when the completion starts. The
    completion waits for it and then sees the event cancelled (as it is once locked, not as
    its statement's snapshot had it): nothing is sold."""
    await ordering.on_sale(event_id=13, type_id=131, capacity=5)
    await ordering.customer(100)
    cmd, placed = await ordering.placed_order(100, 131, 1)
    cancel = "UPDATE ordering.events SET status = 'cancelled' WHERE event_id = 13"
    done, _ = await _complete_behind(ordering, cancel, cmd, placed)
    with pytest.raises(BadRequest, match=r"Event 'Event 13' has been cancelled\."):
        await done
    assert await ordering.count(tickets) == 0
    assert await ordering.scalar(select(ticket_types.c.sold)) == 0


async def test_an_add_skips_the_early_read_only_while_plenty_is_left(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early refusal's read is skipped while this process saw plenty of the type left a
    moment ago (it could only have said yes). When that is no longer true (another instance
    held the rest meanwhile) the add is still refused exactly, by its transaction, and the
    next one reads first again."""
    monkeypatch.setattr(cart, "_left_seen", {})
    reads = 0
    offer_now = cart._offer_now

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await offer_now(*args)

    monkeypatch.setattr(cart, "_offer_now", counted)
    await ordering.on_sale(event_id=14, type_id=141, capacity=cart.PLENTY + 3)

    async def add(user_id: int) -> None:
        await ordering.customer(user_id)
        cmd = cart.AddToCart(user_id, 141, 1)
        await cart.refuse_early(cmd, ordering.db, RULES, utcnow())
        await cart.add_item(cmd, ordering.db, RULES, utcnow())

    await add(100)
    assert reads == 1  # nothing seen yet
    await add(101)
    assert reads == 1  # plenty was left
    async with ordering.db.engine.begin() as conn:  # another instance holds the rest
        await conn.execute(ticket_types.update().values(held=ticket_types.c.max_count))
    with pytest.raises(BadRequest, match="Only 0 left"):
        await add(102)
    assert reads == 1
    with pytest.raises(BadRequest, match="Only 0 left"):
        await add(103)
    assert reads == 2  # refused by the early read
    assert await ordering.count(cart_items) == 2


async def _seen_sold_out(ordering: Ordering, event_id: int, customers: range) -> None:
    """Type `event_id`1 on sale with one ticket, which the first of `customers` takes, as
    this process sees."""
    type_id = event_id * 10 + 1
    await ordering.on_sale(event_id=event_id, type_id=type_id, capacity=1)
    for user_id in customers:
        await ordering.customer(user_id)
    first = cart.AddToCart(customers[0], type_id, 1)
    await cart.refuse_early(first, ordering.db, RULES, utcnow())
    await cart.add_item(first, ordering.db, RULES, utcnow())


async def test_adds_to_a_type_that_looked_sold_out_read_it_a_few_at_a_time(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crowd's adds to a type this process saw sold out a moment ago read it through a
    gate, SHORT_READS at a time, so the purchases under way keep the CPU and the pool; each
    is still answered from the type as it is when its read runs: refused exactly while none
    is left, and sold one once a hold is given back."""
    monkeypatch.setattr(cart, "_left_seen", {})
    in_flight = most = 0
    offer_now = cart._offer_now

    async def counted(*args: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.01)  # a read that takes a moment, as under load
            return await offer_now(*args)
        finally:
            in_flight -= 1

    monkeypatch.setattr(cart, "_offer_now", counted)
    await _seen_sold_out(ordering, event_id=15, customers=range(100, 113))

    async def add(user_id: int) -> str:
        cmd = cart.AddToCart(user_id, 151, 1)
        try:
            await cart.refuse_early(cmd, ordering.db, RULES, utcnow())
            await cart.add_item(cmd, ordering.db, RULES, utcnow())
        except BadRequest as exc:
            return exc.detail
        return "added"

    most = 0
    answers = await asyncio.gather(*(add(u) for u in range(101, 111)))
    assert most == cart.SHORT_READS
    assert all(a.endswith("Only 0 left.") for a in answers), answers
    async with ordering.db.engine.begin() as conn:  # the holder gives the ticket back
        await conn.execute(cart_items.delete())
        await conn.execute(ticket_types.update().values(held=0))
    assert await add(111) == "added"  # still gated (seen sold out), and sold what is there
    assert (
        await add(112)
        == "Not enough tickets available for 'Event 15 - Standard Ticket'. Only 0 left."
    )


async def test_an_add_waits_for_its_turn_at_the_gate_a_bounded_time_then_reads_anyway(
    ordering: Ordering, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crowd the gate cannot serve in time (every turn taken for longer than SHORT_WAIT_S)
    is still answered, exactly, once the wait runs out; and turns given up or granted just
    as waits run out are never lost to the gate."""
    monkeypatch.setattr(cart, "_left_seen", {})
    monkeypatch.setattr(cart, "SHORT_WAIT_S", 0.05)
    await _seen_sold_out(ordering, event_id=16, customers=range(200, 260))

    async def refusal(user_id: int) -> str:
        with pytest.raises(BadRequest) as refused:
            await cart.refuse_early(cart.AddToCart(user_id, 161, 1), ordering.db, RULES, utcnow())
        return refused.value.detail

    gate = cart._gate()
    for _ in range(cart.SHORT_READS):  # every turn taken, and kept
        await gate.acquire()
    async with asyncio.timeout(2):  # not held until the turns come back
        answers = await asyncio.gather(*(refusal(u) for u in range(201, 205)))
    assert all(a.endswith("Only 0 left.") for a in answers), answers
    for _ in range(cart.SHORT_READS):
        gate.release()

    offer_now = cart._offer_now

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(0.02)  # turns end about as waits run out
        return await offer_now(*args)

    monkeypatch.setattr(cart, "_offer_now", slow)
    answers = await asyncio.gather(*(refusal(u) for u in range(205, 260)))
    assert all(a.endswith("Only 0 left.") for a in answers), answers
    async with asyncio.timeout(1):  # every turn is back: all can be taken at once, no more
        for _ in range(cart.SHORT_READS):
            await gate.acquire()
    assert gate.locked()
    for _ in range(cart.SHORT_READS):
        gate.release()


class _CatalogHeadAt(CatchUp):
    """Ordering's catch-up with catalog, given catalog's newest event (what its
    /internal/events/head answers; the decision after it is what is tested here)."""

    def __init__(
        self, db: Database, newest: uuid.UUID, recent: list[uuid.UUID] | None = None
    ) -> None:
        super().__init__(
            db, Upstreams({}, connect_timeout_s=1, timeout_s=1), ["catalog.TicketTypeCreated"], 0.3
        )
        self.newest = newest
        self.recent = recent or []

    async def head(self, producer: str) -> Head:
        return Head(event_id=self.newest, recent=self.recent)


async def test_a_refusal_is_asked_again_only_while_catalogs_newest_event_may_be_new_to_it(
    ordering: Ordering,
) -> None:
    await ordering.on_sale(event_id=1, type_id=11)
    inbox = ordering.db.inbox
    newest = await ordering.scalar(select(inbox.c.event_id).order_by(inbox.c.handled_at.desc()))
    catch_up = _CatalogHeadAt(ordering.db, newest)
    found: list[bool] = []
    catch_up.on_newly_handled = lambda: found.append(True)
    # Handled a moment ago, and not yet known here when the read began: it may not have seen it.
    assert await catch_up.changed_since(utcnow(), monotonic(), "catalog")
    assert found == [True]  # remembered answers are forgotten: they may predate it
    # Known handled before the read began: the read saw it, asking again would say the same.
    assert not await catch_up.changed_since(utcnow(), monotonic(), "catalog")
    assert found == [True]  # and nothing more to forget
    async with ordering.db.engine.begin() as conn:
        await conn.execute(
            inbox.update()
            .where(inbox.c.event_id == newest)
            .values(handled_at=func.now() - timedelta(hours=1))
        )
    # Handled well before the read began, though only found now (another process's restart).
    assert not await _CatalogHeadAt(ordering.db, newest).changed_since(
        utcnow(), monotonic(), "catalog"
    )
    # Not handled in time: the answer may rest on a projection behind catalog.
    assert await _CatalogHeadAt(ordering.db, uuid.uuid4()).changed_since(
        utcnow(), monotonic(), "catalog"
    )


async def test_a_refusal_waits_for_an_older_event_still_in_progress_not_only_the_newest(
    ordering: Ordering,
) -> None:
    """Catalog's newest event is handled here, an older one published a moment before it is
    not yet (its batch still running): the refusal is not given from the projection until that
    one is handled too."""
    await ordering.on_sale(event_id=15, type_id=151)
    inbox = ordering.db.inbox
    newest = await ordering.scalar(select(inbox.c.event_id).order_by(inbox.c.handled_at.desc()))
    older = uuid.uuid4()
    catch_up = _CatalogHeadAt(ordering.db, newest, recent=[older])
    assert not await catch_up("catalog")  # out of time: the older one is not handled
    assert await catch_up.changed_since(utcnow(), monotonic(), "catalog")
    started, began = utcnow(), monotonic()  # a read begins: the older one is not handled
    waiting = asyncio.create_task(catch_up("catalog"))
    await asyncio.sleep(0.05)
    async with ordering.db.engine.begin() as conn:
        await conn.execute(
            inbox.insert().values(
                event_id=older, producer="catalog", type="catalog.TicketTypeCreated", sequence=1
            )
        )
    assert await waiting
    # The newest was found before that read began, the older one after: it may not have seen
    # the older one, so the refusal is asked again; a read begun now saw both.
    assert await catch_up.changed_since(started, began, "catalog")
    assert not await catch_up.changed_since(utcnow(), monotonic(), "catalog")


async def test_a_producer_waits_for_its_own_events_not_for_the_newest(ordering: Ordering) -> None:
    """What catalog's change waits for before it answers: its own events handled here. A
    newer event handled first (another batch) does not stand for an older one still in
    progress; events of types not consumed here are not waited for."""
    catch_up = _CatalogHeadAt(ordering.db, uuid.uuid4())
    await ordering.on_sale(event_id=14, type_id=141)
    inbox = ordering.db.inbox
    handled = await ordering.scalar(select(inbox.c.event_id).order_by(inbox.c.handled_at.desc()))
    still_in_progress = uuid.uuid4()
    assert await catch_up.handled([(handled, "catalog.TicketTypeCreated")])
    assert not await catch_up.handled(
        [(handled, "catalog.TicketTypeCreated"), (still_in_progress, "catalog.TicketTypeCreated")]
    )
    assert await catch_up.handled([(still_in_progress, "catalog.LocationDeleted")])


async def test_an_add_puts_its_line_with_the_rules_read_and_a_refusal_leaves_none(
    ordering: Ordering,
) -> None:
    """The line goes in with the statement that reads the rules (while the type is not sold
    out); an add the rules then refuse rolls it back with its transaction."""
    await ordering.on_sale(event_id=13, type_id=131, capacity=30)
    await ordering.customer(100)
    with pytest.raises(BadRequest, match="at most 20 tickets"):
        await cart.add_item(cart.AddToCart(100, 131, 21), ordering.db, RULES, utcnow())
    assert await ordering.count(cart_items) == 0
    assert await ordering.scalar(select(ticket_types.c.held)) == 0
    first = await cart.add_item(cart.AddToCart(100, 131, 2), ordering.db, RULES, utcnow())
    grown = await cart.add_item(cart.AddToCart(100, 131, 3), ordering.db, RULES, utcnow())
    assert (first["quantity"], grown["quantity"]) == (2, 5)
    assert first["cart_item_id"] == grown["cart_item_id"]
    with pytest.raises(BadRequest, match="at most 20 tickets"):
        await cart.add_item(cart.AddToCart(100, 131, 16), ordering.db, RULES, utcnow())
    assert await ordering.scalar(select(cart_items.c.quantity)) == 5
    assert await ordering.scalar(select(ticket_types.c.held)) == 5
    assert [e["quantity"] for e in await ordering.events_of("ordering.HoldPlaced")] == [2, 5]
