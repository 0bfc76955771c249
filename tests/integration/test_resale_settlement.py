"""Resale's settlement on a migrated schema in a scratch database, fed through the kernel
consumer as the broker feeds it: a resale buyer whose event is cancelled is refunded once,
whichever order the transfer and the refund of the ticket arrive in (an event parked for a
retry is applied after the later events of its ticket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest
from sqlalchemy import func, select

from contracts.catalog import EventApproved, EventCancelled
from contracts.envelope import Event
from contracts.ordering import (
    TicketPurchased,
    TicketRefunded,
    TicketTransferred,
    TicketTransferRefused,
)
from contracts.timeutil import utcnow
from services.kernel import broker
from services.kernel.consumer import Consumer
from services.kernel.db import Database
from services.kernel.errors import BadRequest
from services.kernel.payments import SimulatedProvider
from services.resale import consumers, purchase
from services.resale.consumers import HANDLERS
from services.resale.listings import ListTicket, list_ticket
from services.resale.models import metadata, outbox, payments, purchases, tickets
from tests.integration.conftest import migrated_harness
from tests.integration.test_ordering_reactions import (
    customer_registered,
    envelope,
    event_created,
)

SELLER, BUYER, THIRD, TICKET, EVENT = 100, 200, 300, 7, 1


class Resale:
    def __init__(self, url: str) -> None:
        self.db = Database(url, "resale", metadata, pool_size=4)
        self.consumer = Consumer("resale", self.db, broker.Names("unused"), HANDLERS, (50,))

    async def deliver(self, event: Event, aggregate_id: object) -> None:
        assert await self.consumer.handle(envelope(event, aggregate_id)) is True

    async def scalar(self, stmt: object) -> object:
        async with self.db.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def on_sale_with_holder(self) -> None:
        """An event on sale, customers SELLER, BUYER and THIRD, and SELLER's ticket TICKET."""
        await self.deliver(event_created(EVENT), EVENT)
        await self.deliver(EventApproved(event_id=EVENT, by=1), EVENT)
        for user_id in (SELLER, BUYER, THIRD):
            await self.deliver(customer_registered(user_id), user_id)
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

    async def sold(self, seller: int, buyer: int, price: str) -> int:
        """`seller` lists TICKET at `price` and `buyer` buys it: charged, the sale recorded,
        ordering's transfer not yet applied here. The listing's id."""
        async with self.db.unit_of_work() as uow:
            await list_ticket(ListTicket(TICKET, seller, Decimal(price)), uow, None)
        async with self.db.unit_of_work() as uow:
            bought = await purchase.claim(purchase.BuyTicket(TICKET, buyer, None, None, None), uow)
        paid = await purchase.charge(bought, None, self.db, SimulatedProvider(self.db, 0))
        async with self.db.unit_of_work() as uow:
            await purchase.record_sale(bought, paid, Decimal("5"), uow)
        return int(bought.listing_id)

    async def refunded(self) -> dict[str, Decimal]:
        """What each resale purchase's charge has had refunded, by its price."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(payments.c.amount, payments.c.refunded))
            return {str(r.amount): r.refunded for r in rows}


@pytest.fixture
async def resale() -> AsyncIterator[Resale]:
    async with migrated_harness("resale", Resale) as running:
        yield running


def _voided(owner_id: int) -> TicketRefunded:
    """Ordering's void of TICKET with its cancelled event (no money: a resale holder's)."""
    return TicketRefunded(
        ticket_id=TICKET,
        owner_id=owner_id,
        event_id=EVENT,
        amount="0.00",
        currency="USD",
        reason="event_cancelled_resold",
    )


def _moved(listing_id: int, from_user_id: int, to_user_id: int) -> TicketTransferred:
    return TicketTransferred(
        ticket_id=TICKET, listing_id=listing_id, from_user_id=from_user_id, to_user_id=to_user_id
    )


@pytest.mark.parametrize("transfer_retried", [False, True], ids=["in order", "transfer last"])
async def test_a_cancelled_resale_buyer_is_refunded_once_whatever_the_order(
    resale: Resale, transfer_retried: bool
) -> None:
    """Ordering moved the ticket to the buyer, then voided it with its cancelled event
    (TicketTransferred, then TicketRefunded). Applied in that order, or with the transfer
    last (it failed once and was parked for a retry meanwhile), the buyer gets back the 40
    paid, once, and the purchase is complete."""
    await resale.on_sale_with_holder()
    listing_id = await resale.sold(SELLER, BUYER, "40.00")
    transferred, voided = _moved(listing_id, SELLER, BUYER), _voided(BUYER)
    await resale.deliver(EventCancelled(event_id=EVENT, by=1, at=utcnow()), EVENT)
    for event in [voided, transferred] if transfer_retried else [transferred, voided]:
        await resale.deliver(event, TICKET)

    assert await resale.scalar(select(purchases.c.status)) == "completed"
    assert await resale.refunded() == {"40.00": Decimal("40.00")}
    refunds = select(func.count()).where(outbox.c.type == "resale.ResaleRefunded")
    assert await resale.scalar(refunds) == 1


@pytest.mark.parametrize("transferred", [True, False], ids=["transferred", "refused"])
async def test_a_ticket_resold_twice_refunds_only_whoever_holds_it_at_the_cancellation(
    resale: Resale, transferred: bool
) -> None:
    """SELLER sold to BUYER at 40 (transferred), BUYER to THIRD at 60; the event is cancelled
    while the second sale settles, its settling event applied last (parked for a retry).
    Transferred, THIRD holds the ticket and gets back 60, BUYER (paid by THIRD) nothing;
    refused (the ticket was void first), BUYER still holds it and gets back 40, THIRD 60."""
    await resale.on_sale_with_holder()
    first = await resale.sold(SELLER, BUYER, "40.00")
    await resale.deliver(_moved(first, SELLER, BUYER), TICKET)
    second = await resale.sold(BUYER, THIRD, "60.00")
    await resale.deliver(EventCancelled(event_id=EVENT, by=1, at=utcnow()), EVENT)
    if transferred:
        await resale.deliver(_voided(THIRD), TICKET)
        await resale.deliver(_moved(second, BUYER, THIRD), TICKET)
        assert await resale.refunded() == {"40.00": Decimal("0.00"), "60.00": Decimal("60.00")}
    else:
        await resale.deliver(_voided(BUYER), TICKET)
        refused = TicketTransferRefused(
            ticket_id=TICKET, listing_id=second, reason="ticket_refunded"
        )
        await resale.deliver(refused, TICKET)
        assert await resale.refunded() == {"40.00": Decimal("40.00"), "60.00": Decimal("60.00")}


async def test_an_older_transfer_applied_again_does_not_take_the_ticket_back(
    resale: Resale,
) -> None:
    """SELLER sold to BUYER, BUYER to THIRD; then the first transfer comes again (a replay's
    reprocess of part of the log, or a retry): THIRD still holds the ticket, and would be the
    one refunded if the event were cancelled."""
    await resale.on_sale_with_holder()
    first = await resale.sold(SELLER, BUYER, "40.00")
    first_moved = envelope(_moved(first, SELLER, BUYER), TICKET)
    assert await resale.consumer.handle(first_moved) is True
    second = await resale.sold(BUYER, THIRD, "60.00")
    await resale.deliver(_moved(second, BUYER, THIRD), TICKET)
    older = msgspec.json.decode(first_moved)["sequence"]
    again = envelope(_moved(first, SELLER, BUYER), TICKET, sequence=older)
    assert await resale.consumer.handle(again) is True
    assert (
        await resale.scalar(select(tickets.c.owner_id).where(tickets.c.ticket_id == TICKET))
        == THIRD
    )


async def test_a_cancellation_that_died_after_a_refund_is_retried_with_the_same_purchases(
    resale: Resale, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BUYER bought the ticket from SELLER and listed it again. The cancellation's handler
    refunded BUYER at the processor, then died before its commit. The event's cancellation
    and the listing's withdrawal were committed before the refund, so THIRD cannot buy the
    listing before the retry, which refunds BUYER the same 40 under the same key. Before,
    THIRD could: the retry skipped BUYER (a later sale), who kept both the refund and the
    payout."""
    await resale.on_sale_with_holder()
    first = await resale.sold(SELLER, BUYER, "40.00")
    await resale.deliver(_moved(first, SELLER, BUYER), TICKET)
    async with resale.db.unit_of_work() as uow:
        await list_ticket(ListTicket(TICKET, BUYER, Decimal("60.00")), uow, None)

    class DiesAfterRefund(SimulatedProvider):
        async def refund(self, payment_id: str, amount: Decimal, *, idempotency_key: str) -> None:
            await super().refund(payment_id, amount, idempotency_key=idempotency_key)
            raise RuntimeError("the process died here")

    monkeypatch.setattr(consumers, "payment_provider", lambda db: DiesAfterRefund(db, 0))
    cancelled = envelope(EventCancelled(event_id=EVENT, by=1, at=utcnow()), EVENT)
    with pytest.raises(RuntimeError, match="died here"):
        await resale.consumer.handle(cancelled)
    monkeypatch.undo()
    async with resale.db.unit_of_work() as uow:
        with pytest.raises(BadRequest, match="Ticket is not for resale"):
            await purchase.claim(purchase.BuyTicket(TICKET, THIRD, None, None, None), uow)
    assert await resale.consumer.handle(cancelled) is True  # the broker's redelivery
    assert await resale.refunded() == {"40.00": Decimal("40.00")}
    refunds = select(func.count()).where(outbox.c.type == "resale.ResaleRefunded")
    assert await resale.scalar(refunds) == 1
