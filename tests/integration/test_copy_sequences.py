"""Copies of other services' facts keep the newest: an older event applied after a newer one
(a retry parked it, a replay's reprocess brings it again) changes nothing the newer one wrote,
and an event about something not copied yet waits for it instead of being lost.

Each service's consumer runs on its own migrated scratch database, fed through the kernel
consumer as the broker feeds it, every event with the producer's sequence it would carry.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from msgspec.structs import replace
from sqlalchemy import Table, select
from sqlalchemy.engine import make_url

from contracts.auth import (
    OrganizerRejected,
    OrganizerVerified,
    UserBanned,
    UserProfileUpdated,
    UserRegistered,
    UserUnbanned,
)
from contracts.catalog import (
    EventApproved,
    EventCancelled,
    EventCreated,
    EventUpdated,
    LocationUpdated,
    TicketTypeCreated,
    TicketTypeUpdated,
)
from contracts.codec import decode_envelope
from contracts.envelope import Envelope, Event
from contracts.ordering import (
    TicketCheckedIn,
    TicketPurchased,
    TicketRefunded,
    TicketTransferred,
)
from contracts.timeutil import utcnow
from services.kernel import broker
from services.kernel.consumer import Consumer
from services.kernel.db import Database
from services.kernel.errors import Forbidden
from services.kernel.projections import NotProjectedYet
from services.resale.listings import ListTicket, list_or_reprice, list_ticket
from tests.integration.conftest import migrated_harness
from tests.integration.test_ordering_reactions import customer_registered, envelope, type_saved
from tests.support.shop import lock_waited_for

EVENT, HALL, ARENA = 1, 1, 2


class Copies:
    """A service's consumer on its own migrated database."""

    def __init__(self, service: str, url: str) -> None:
        self.models = importlib.import_module(f"services.{service}.models")
        handlers = importlib.import_module(f"services.{service}.consumers").HANDLERS
        self.db = Database(url, service, self.models.metadata, pool_size=4)
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.consumer = Consumer(service, self.db, broker.Names("unused"), handlers, (50,))

    async def apply(self, event: Event, sequence: int, aggregate: object = 1) -> None:
        assert await self.consumer.handle(envelope(event, aggregate, sequence)) is True

    async def row(self, table: str, **key: object) -> Any:
        t: Table = self.models.metadata.tables[f"{self.db.schema}.{table}"]
        which = [t.c[name] == value for name, value in key.items()]
        async with self.db.engine.connect() as conn:
            return (await conn.execute(select(t).where(*which))).one()


@pytest.fixture(params=["ordering", "resale"])
async def copies(request: pytest.FixtureRequest) -> AsyncIterator[Copies]:
    """Ordering's or resale's copies of catalog's events and auth's users."""
    service = request.param
    async with migrated_harness(service, lambda url: Copies(service, url)) as running:
        yield running


@pytest.fixture
async def catalog() -> AsyncIterator[Copies]:
    async with migrated_harness("catalog", lambda url: Copies("catalog", url)) as running:
        yield running


@pytest.fixture
async def resale() -> AsyncIterator[Copies]:
    async with migrated_harness("resale", lambda url: Copies("resale", url)) as running:
        yield running


def _event(kind: type[EventCreated], **changes: object) -> EventCreated:
    now = utcnow()
    fields: dict[str, Any] = {
        "event_id": EVENT,
        "organizer_id": 1,
        "name": "Spring Gala",
        "start_date": now + timedelta(days=5),
        "end_date": now + timedelta(days=6),
        "location_id": HALL,
        "location_name": "Hall",
        "status": "pending",
    }
    return kind(**(fields | changes))


def _location(location_id: int, name: str) -> LocationUpdated:
    return LocationUpdated(
        location_id=location_id, name=name, address="1 Main St", city="Oslo", country="NO"
    )


async def test_an_older_update_applied_again_leaves_the_newer_fields(copies: Copies) -> None:
    await copies.apply(_event(EventCreated), 1)
    await copies.apply(_event(EventUpdated, name="Autumn Gala"), 3)
    await copies.apply(_event(EventUpdated, name="Summer Gala"), 2)
    assert (await copies.row("events", event_id=EVENT)).name == "Autumn Gala"


async def test_status_and_fields_each_keep_their_newest(copies: Copies) -> None:
    """An update (2, made while pending) applied after the approval (3) that followed it: the
    update's name is taken, and the approval stays; the creation applied again (1) brings back
    neither its name nor 'pending'."""
    await copies.apply(_event(EventCreated), 1)
    await copies.apply(EventApproved(event_id=EVENT, by=9), 3)
    await copies.apply(_event(EventUpdated, name="Autumn Gala"), 2)
    row = await copies.row("events", event_id=EVENT)
    assert (row.name, row.status) == ("Autumn Gala", "created")
    await copies.apply(_event(EventCreated), 1)
    row = await copies.row("events", event_id=EVENT)
    assert (row.name, row.status) == ("Autumn Gala", "created")


async def test_a_status_before_its_event_waits_for_it(copies: Copies) -> None:
    """The approval arrives first (the creation was parked for a retry): it is retried, not
    lost, and the creation that follows does not take it back to 'pending'."""
    approved = envelope(EventApproved(event_id=EVENT, by=9), EVENT, 2)
    with pytest.raises(NotProjectedYet):
        await copies.consumer.handle(approved)
    await copies.apply(_event(EventCreated), 1)
    assert await copies.consumer.handle(approved) is True
    assert (await copies.row("events", event_id=EVENT)).status == "created"


async def test_a_cancellation_is_final_whatever_comes_after(resale: Copies) -> None:
    await resale.apply(_event(EventCreated), 1)
    await resale.apply(EventCancelled(event_id=EVENT, by=9, at=utcnow()), 3)
    await resale.apply(_event(EventUpdated, status="created"), 4)
    await resale.apply(EventApproved(event_id=EVENT, by=9), 5)
    assert (await resale.row("events", event_id=EVENT)).status == "cancelled"


async def test_a_location_keeps_its_newest_name(copies: Copies) -> None:
    """The hall renamed (3), then an update of the event from before the rename (2) applied:
    the event still shows the new name."""
    await copies.apply(_event(EventCreated), 1)
    await copies.apply(_location(HALL, "Great Hall"), 3)
    await copies.apply(_event(EventUpdated, name="Autumn Gala"), 2)
    row = await copies.row("events", event_id=EVENT)
    assert (row.name, row.location_name) == ("Autumn Gala", "Great Hall")
    await copies.apply(_location(HALL, "Hall"), 1)
    assert (await copies.row("events", event_id=EVENT)).location_name == "Great Hall"


async def test_an_event_moved_takes_its_new_locations_newest_name(copies: Copies) -> None:
    """The arena was renamed (5) before the move to it (4) arrived: the event shows the
    arena's new name, not the one the move carried, nor the hall's."""
    await copies.apply(_event(EventCreated), 1)
    await copies.apply(_location(ARENA, "Arena Nova"), 5)
    await copies.apply(_event(EventUpdated, location_id=ARENA, location_name="Arena"), 4)
    row = await copies.row("events", event_id=EVENT)
    assert (row.location_id, row.location_name) == (ARENA, "Arena Nova")
    await copies.apply(_location(HALL, "Great Hall"), 6)
    assert (await copies.row("events", event_id=EVENT)).location_name == "Arena Nova"


async def test_a_user_keeps_the_newest_name(copies: Copies) -> None:
    registered = customer_registered(7)
    await copies.apply(registered, 1, 7)
    renamed = UserProfileUpdated(user_id=7, login="c7", first_name="Ada", last_name="Byron")
    await copies.apply(renamed, 3, 7)
    older = UserProfileUpdated(user_id=7, login="c7", first_name="Ann", last_name="Old")
    await copies.apply(older, 2, 7)
    await copies.apply(registered, 1, 7)
    row = await copies.row("users", user_id=7)
    assert (row.first_name, row.email) == ("Ada", "c7@example.com")


async def test_a_profile_before_its_user_waits_for_it(copies: Copies) -> None:
    renamed = envelope(
        UserProfileUpdated(user_id=8, login="c8", first_name="Ada", last_name="Byron"), 8, 2
    )
    with pytest.raises(NotProjectedYet):
        await copies.consumer.handle(renamed)
    await copies.apply(customer_registered(8), 1, 8)
    assert await copies.consumer.handle(renamed) is True
    assert (await copies.row("users", user_id=8)).first_name == "Ada"


async def test_one_batch_keeps_the_newest_of_each_user(copies: Copies) -> None:
    """Two registrations of one user in one batch, the newer first: the newer stays."""
    handler = copies.consumer.handlers["auth.UserRegistered"]
    older, newer = customer_registered(9), replace(customer_registered(9), first_name="Ada")
    batch = [(newer, _envelope_of(newer, 9, 5)), (older, _envelope_of(older, 9, 4))]
    async with copies.db.unit_of_work() as uow:
        await handler.many(batch, uow)  # type: ignore[attr-defined]
        await uow.commit()
    assert (await copies.row("users", user_id=9)).first_name == "Ada"


def _envelope_of(event: Event, aggregate: object, sequence: int) -> Envelope:
    return decode_envelope(envelope(event, aggregate, sequence))


async def test_resale_keeps_the_newest_ticket_type(resale: Copies) -> None:
    await resale.apply(type_saved(TicketTypeCreated, 11, EVENT, 10), 1, 11)
    newer = replace(type_saved(TicketTypeUpdated, 11, EVENT, 10), description="VIP")
    await resale.apply(newer, 3, 11)
    older = replace(type_saved(TicketTypeUpdated, 11, EVENT, 10), description="Balcony")
    await resale.apply(older, 2, 11)
    assert (await resale.row("ticket_types", type_id=11)).description == "VIP"


async def _ticket_on_sale(resale: Copies) -> None:
    """Ticket 5 of customer 100, for an event on sale."""
    await resale.apply(_event(EventCreated), 1)
    await resale.apply(EventApproved(event_id=EVENT, by=9), 2)
    await resale.apply(customer_registered(100), 1, 100)
    purchased = TicketPurchased(
        ticket_id=5,
        order_id=1,
        type_id=11,
        event_id=EVENT,
        owner_id=100,
        price="25.00",
        currency="USD",
    )
    await resale.apply(purchased, 1, 5)


def _refunded() -> TicketRefunded:
    """Ticket 5 voided with its cancelled event."""
    return TicketRefunded(
        ticket_id=5,
        owner_id=100,
        event_id=EVENT,
        amount="25.00",
        currency="USD",
        reason="event_cancelled",
    )


async def test_a_check_in_applied_after_the_refund_leaves_it_refunded(resale: Copies) -> None:
    await _ticket_on_sale(resale)
    await resale.apply(_refunded(), 3, 5)
    await resale.apply(
        TicketCheckedIn(ticket_id=5, event_id=EVENT, checked_in_at=utcnow(), by=1), 2, 5
    )
    assert (await resale.row("tickets", ticket_id=5)).status == "refunded"


@pytest.mark.parametrize("later", ["refunded", "checked_in", "transferred"])
async def test_a_tickets_event_before_its_purchase_waits_for_it(resale: Copies, later: str) -> None:
    """The purchase was parked for a retry and a later event of the ticket came first: it is
    not applied to nothing but retried (the holder could have listed a refunded ticket)."""
    event: Event = {
        "refunded": _refunded(),
        "checked_in": TicketCheckedIn(ticket_id=5, event_id=EVENT, checked_in_at=utcnow(), by=1),
        "transferred": TicketTransferred(
            ticket_id=5, listing_id=77, from_user_id=100, to_user_id=200
        ),
    }[later]
    body = envelope(event, 5, 3)
    with pytest.raises(NotProjectedYet):
        await resale.consumer.handle(body)
    await _ticket_on_sale(resale)
    assert await resale.consumer.handle(body) is True
    row = await resale.row("tickets", ticket_id=5)
    assert (row.status, row.owner_id) == {
        "refunded": ("refunded", 100),
        "checked_in": ("used", 100),
        "transferred": ("valid", 200),
    }[later]


async def test_an_open_listing_shows_the_events_newest_name(resale: Copies) -> None:
    await _ticket_on_sale(resale)
    async with resale.db.unit_of_work() as uow:
        await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)
    await resale.apply(_event(EventUpdated, status="created", name="Autumn Gala"), 4)
    await resale.apply(_event(EventUpdated, status="created", name="Summer Gala"), 3)
    assert (await resale.row("listings", ticket_id=5)).event_name == "Autumn Gala"


def _organizer_registered() -> UserRegistered:
    return UserRegistered(
        user_id=50,
        email="o50@example.com",
        role="organizer",
        role_id=5,
        first_name="Olga",
        last_name="Org",
        login="o50",
        account_state="active",
        company_name="Olga Events",
        is_verified=False,
    )


def _ban(kind: type[UserBanned], state: str) -> UserBanned:
    return kind(user_id=50, role="organizer", role_id=5, at=utcnow(), account_state=state)


async def _organizer(catalog: Copies) -> tuple[bool, str]:
    row = await catalog.row("organizers", organizer_id=5)
    return row.verified, row.account_state


async def test_an_older_ban_applied_again_does_not_ban_again(catalog: Copies) -> None:
    await catalog.apply(_organizer_registered(), 1, 50)
    await catalog.apply(OrganizerVerified(user_id=50, organizer_id=5, by=1), 2, 50)
    await catalog.apply(_ban(UserBanned, "banned"), 3, 50)
    await catalog.apply(_ban(UserUnbanned, "active"), 4, 50)
    await catalog.apply(_ban(UserBanned, "banned"), 3, 50)
    await catalog.apply(_organizer_registered(), 1, 50)
    assert await _organizer(catalog) == (True, "active")


async def test_a_ban_before_the_approval_keeps_both(catalog: Copies) -> None:
    """The ban (3) arrives before the approval (2) that preceded it: the organizer is verified
    and banned; neither event hides the other. A rejection older than both changes nothing."""
    await catalog.apply(_ban(UserBanned, "banned"), 3, 50)
    await catalog.apply(OrganizerVerified(user_id=50, organizer_id=5, by=1), 2, 50)
    await catalog.apply(_organizer_registered(), 1, 50)
    assert await _organizer(catalog) == (True, "banned")
    rejected = OrganizerRejected(user_id=50, organizer_id=5, by=1, account_state="active")
    await catalog.apply(rejected, 1, 50)
    assert await _organizer(catalog) == (True, "banned")


async def test_one_batch_of_registrations_keeps_an_organizer_beside_a_customer(
    catalog: Copies,
) -> None:
    """A customer's role id is not an organizer's: a newer customer of the same role id in the
    batch leaves the organizer registered."""
    organizer, customer = _organizer_registered(), customer_registered(5)
    batch = [(organizer, _envelope_of(organizer, 50, 1)), (customer, _envelope_of(customer, 5, 2))]
    handler = catalog.consumer.handlers["auth.UserRegistered"]
    async with catalog.db.unit_of_work() as uow:
        await handler.many(batch, uow)  # type: ignore[attr-defined]
        await uow.commit()
    assert await _organizer(catalog) == (False, "active")


def _seller_ban(kind: type[UserBanned]) -> UserBanned:
    state = "banned" if kind is UserBanned else "active"
    return kind(user_id=100, role="customer", role_id=100, at=utcnow(), account_state=state)


async def _listing(resale: Copies) -> Any:
    return await resale.row("listings", ticket_id=5)


async def test_an_older_ban_applied_after_the_unban_leaves_the_new_listing(resale: Copies) -> None:
    """Banned (3), unbanned (4), then lists again: the ban applied once more (a retry, a
    replay's reprocess) withdraws nothing, and a banned seller could not have listed."""
    await _ticket_on_sale(resale)
    await resale.apply(_seller_ban(UserBanned), 3, 100)
    async with resale.db.unit_of_work() as uow:
        with pytest.raises(Forbidden, match="Account banned"):
            await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)
    await resale.apply(_seller_ban(UserUnbanned), 4, 100)
    async with resale.db.unit_of_work() as uow:
        await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)
    await resale.apply(_seller_ban(UserBanned), 3, 100)
    assert (await _listing(resale)).state == "active"
    assert (await resale.row("users", user_id=100)).banned is False


async def test_a_ban_applied_while_the_seller_lists_withdraws_the_new_listing(
    resale: Copies,
) -> None:
    """The listing's transaction share-locks the seller's row: a ban applied meanwhile waits
    for it to commit, then withdraws the listing with the rest (it does not miss it)."""
    await _ticket_on_sale(resale)
    async with resale.db.engine.connect() as other:
        # The listing waits for the ticket's row after taking the seller's.
        await other.exec_driver_sql("SELECT 1 FROM resale.tickets WHERE ticket_id = 5 FOR UPDATE")

        async def listing() -> None:
            async with resale.db.unit_of_work() as uow:
                await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)

        listed = asyncio.create_task(listing())
        await lock_waited_for(resale.dsn, "%resale.tickets%", listed)
        ban = asyncio.create_task(resale.apply(_seller_ban(UserBanned), 3, 100))
        await lock_waited_for(resale.dsn, "%resale.users%", ban)
        await other.rollback()
    await asyncio.wait_for(asyncio.gather(listed, ban), 10)
    listing = await _listing(resale)
    assert (listing.state, listing.withdrawn_for) == ("cancelled", None), listing


async def test_an_unknown_users_ban_is_kept_for_their_registration(resale: Copies) -> None:
    """The ban (2) applied before the registration (1, parked for a retry): the user is
    copied with the ban, and cannot list."""
    await resale.apply(_seller_ban(UserBanned), 2, 100)
    await _ticket_on_sale(resale)  # the registration of customer 100 among the rest
    row = await resale.row("users", user_id=100)
    assert (row.banned, row.email) == (True, "c100@example.com")
    async with resale.db.unit_of_work() as uow:
        with pytest.raises(Forbidden, match="Account banned"):
            await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)


async def test_a_listing_that_loses_a_deadlock_with_a_batch_is_tried_again(
    resale: Copies,
) -> None:
    """A transaction holding the listing, then locking its seller's row (a consumer's batch:
    an event update, then a ban), against a reprice holding the seller's row, then waiting for
    the listing. PostgreSQL aborts the reprice (the other waits longer before it looks for
    deadlocks): it is tried again once the other has committed, and goes through."""
    await _ticket_on_sale(resale)
    async with resale.db.unit_of_work() as uow:
        await list_ticket(ListTicket(5, 100, Decimal("30.00")), uow, None)
    async with resale.db.engine.connect() as batch:
        await batch.exec_driver_sql("SET deadlock_timeout = '10s'")
        await batch.exec_driver_sql("UPDATE resale.listings SET updated_at = now()")
        repricing = asyncio.create_task(
            list_or_reprice(ListTicket(5, 100, Decimal("35.00")), resale.db, None)
        )
        await lock_waited_for(resale.dsn, "UPDATE resale.listings SET price%", repricing)
        await batch.exec_driver_sql("UPDATE resale.users SET state_seq = 1 WHERE user_id = 100")
        await batch.commit()
    await asyncio.wait_for(repricing, 10)
    assert (await _listing(resale)).price == Decimal("35.00")
