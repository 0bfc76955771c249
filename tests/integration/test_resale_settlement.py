"""Resale's settlement on a migrated schema in a scratch database, fed through the kernel
consumer as the broker feeds it: a resale buyer whose event is cancelled is refunded once,
whichever order the transfer and the refund of the ticket arrive in (an event parked for a
retry is applied after the later events of its ticket)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from contracts.auth import UserRegistered
from contracts.catalog import EventApproved, EventCancelled, EventCreated
from contracts.envelope import Event
from contracts.ordering import TicketPurchased, TicketRefunded, TicketTransferred
from contracts.timeutil import utcnow
from services.kernel import broker
from services.kernel.consumer import Consumer
from services.kernel.db import Database
from services.kernel.migrate import drop_database, ensure_database, upgrade
from services.kernel.payments import SimulatedProvider
from services.resale import purchase
from services.resale.consumers import HANDLERS
from services.resale.listings import ListTicket, list_ticket
from services.resale.models import metadata, outbox, payments, purchases
from tests.integration.test_ordering_reactions import envelope
from tests.support.infra import database_url

SELLER, BUYER, TICKET, EVENT = 100, 200, 7, 1


class Resale:
    def __init__(self, url: str) -> None:
        self.db = Database(url, "resale", metadata, pool_size=4)
        self.consumer = Consumer("resale", self.db, broker.Names("unused"), HANDLERS, (50,))

    async def deliver(self, event: Event, aggregate_id: object) -> None:
        assert await self.consumer.handle(envelope(event, aggregate_id)) is True

    async def scalar(self, stmt: object) -> object:
        async with self.db.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def sold_in_processing(self) -> int:
        """An event on sale, a ticket of it listed by SELLER and bought by BUYER: charged, the
        sale recorded, ordering's transfer not yet applied here. The listing's id."""
        now = utcnow()
        await self.deliver(
            EventCreated(
                event_id=EVENT,
                organizer_id=1,
                name="Event 1",
                start_date=now + timedelta(days=5),
                end_date=now + timedelta(days=6),
                location_id=1,
                location_name="Hall",
                status="pending",
            ),
            EVENT,
        )
        await self.deliver(EventApproved(event_id=EVENT, by=1), EVENT)
        for user_id in (SELLER, BUYER):
            await self.deliver(
                UserRegistered(
                    user_id=user_id,
                    email=f"c{user_id}@example.com",
                    role="customer",
                    role_id=user_id,
                    first_name="Cy",
                    last_name="Holder",
                    login=f"c{user_id}",
                    account_state="active",
                ),
                user_id,
            )
        await self.deliver(
            TicketPurchased(
                ticket_id=TICKET,
                order_id=1,
                type_id=11,
                event_id=EVENT,
                owner_id=SELLER,
                price="25.00",
                currency="USD",
            ),
            TICKET,
        )
        async with self.db.unit_of_work() as uow:
            await list_ticket(ListTicket(TICKET, SELLER, Decimal("40.00")), uow, None)
        async with self.db.unit_of_work() as uow:
            bought = await purchase.claim(purchase.BuyTicket(TICKET, BUYER, None, None, None), uow)
        paid = await purchase.charge(bought, None, self.db, SimulatedProvider(self.db, 0))
        async with self.db.unit_of_work() as uow:
            await purchase.record_sale(bought, paid, Decimal("5"), uow)
        return int(bought.listing_id)


@pytest.fixture
async def resale() -> AsyncIterator[Resale]:
    url = make_url(database_url()).set(database=f"resellio_itres_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    await ensure_database(rendered)
    await asyncio.to_thread(upgrade, "resale", rendered)
    running = Resale(rendered)
    try:
        yield running
    finally:
        await running.db.dispose()
        await drop_database(rendered)


@pytest.mark.parametrize("transfer_retried", [False, True], ids=["in order", "transfer last"])
async def test_a_cancelled_resale_buyer_is_refunded_once_whatever_the_order(
    resale: Resale, transfer_retried: bool
) -> None:
    """Ordering moved the ticket to the buyer, then voided it with its cancelled event
    (TicketTransferred, then TicketRefunded). Applied in that order, or with the transfer
    last (it failed once and was parked for a retry meanwhile), the buyer gets back the 40
    paid, once, and the purchase is complete."""
    listing_id = await resale.sold_in_processing()
    transferred = TicketTransferred(
        ticket_id=TICKET, listing_id=listing_id, from_user_id=SELLER, to_user_id=BUYER
    )
    voided = TicketRefunded(
        ticket_id=TICKET,
        owner_id=BUYER,
        event_id=EVENT,
        amount="0.00",
        currency="USD",
        reason="event_cancelled_resold",
    )
    await resale.deliver(EventCancelled(event_id=EVENT, by=1, at=utcnow()), EVENT)
    for event in [voided, transferred] if transfer_retried else [transferred, voided]:
        await resale.deliver(event, TICKET)

    assert await resale.scalar(select(purchases.c.status)) == "completed"
    assert await resale.scalar(select(payments.c.refunded)) == Decimal("40.00")
    refunds = select(func.count()).where(outbox.c.type == "resale.ResaleRefunded")
    assert await resale.scalar(refunds) == 1
