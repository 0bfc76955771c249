"""Listing a ticket for resale, repricing, withdrawing (API.md §9.4, §9.5), and withdrawing
listings when their ticket or event stops being sellable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from contracts.resale import ListingCancelled, ListingCreated, ListingRepriced
from contracts.timeutil import utcnow
from services.kernel.db import Database, UnitOfWork, is_deadlock
from services.kernel.errors import BadRequest, Conflict, Forbidden, NotFound
from services.kernel.mail import queue_mail
from services.resale.models import listings, users
from services.resale.tickets import OPEN, open_listing_of, ticket_row

TICKET_NOT_FOUND = "Ticket not found"
NOT_OWNER = "Not the ticket owner"
BEING_PURCHASED = "Ticket is being purchased"
NOT_LISTED = "Ticket is not listed for resale"
ACCOUNT_BANNED = "Account banned"


@dataclass(frozen=True)
class ListTicket:
    ticket_id: int
    seller_id: int
    price: Decimal | None


def price_cap(original: Decimal, percent: int | None) -> Decimal | None:
    """original × percent / 100, rounded down to the cent; None = no cap."""
    if percent is None:
        return None
    return (original * percent / 100).quantize(Decimal("0.01"), rounding=ROUND_DOWN)


async def owned_ticket(uow: UnitOfWork, ticket_id: int, user_id: int) -> Any:
    row = await ticket_row(uow.conn, ticket_id, lock=True)
    if row is None:
        raise NotFound(TICKET_NOT_FOUND)
    if row.owner_id != user_id:
        raise Forbidden(NOT_OWNER)
    return row


def refusal(row: Any, price: Decimal | None, default_cap: int | None, now: datetime) -> str | None:
    """Why the owner may not list the ticket at `price` (§9.4's 400s, in order), or None."""
    if price is None:
        return "Resell price required"
    if row.status != "valid":
        return "Ticket is no longer valid"
    if row.event_status in ("cancelled", "rejected"):
        return "Cannot resell tickets for a cancelled event"
    if row.event_end_date <= now:
        return "Cannot resell tickets for an event that has ended"
    if price <= 0:
        return "Resale price must be greater than 0"
    percent = row.resale_price_cap_percent
    cap = price_cap(row.original_price, percent if percent is not None else default_cap)
    if cap is not None and price > cap:
        return f"Resale price exceeds the cap of {cap:.2f}"
    return None


async def list_or_reprice(cmd: ListTicket, db: Database, default_cap: int | None) -> Any:
    """`list_ticket` in a transaction of its own, tried again when PostgreSQL broke a deadlock
    with it: a consumer's batch may lock a listing and then its seller's row (a ban), the
    other way round from a listing. Nothing of an aborted attempt was done. The ticket as it
    left it."""
    for attempt in range(3):
        try:
            async with db.unit_of_work() as uow:
                return await list_ticket(cmd, uow, default_cap)
        except DBAPIError as exc:
            if attempt == 2 or not is_deadlock(exc):
                raise
    raise AssertionError("unreachable")  # the third attempt returns or raises


async def list_ticket(cmd: ListTicket, uow: UnitOfWork, default_cap: int | None) -> Any:
    """List the ticket, or reprice its open listing; errors in the order of §9.4, after the
    ban (§2.2) as resale last heard of it: the seller's row is share-locked, so a ban being
    applied meanwhile waits for this listing, then withdraws it with the rest. The ticket as
    this transaction left it (read after, another request's change would show)."""
    banned = select(users.c.banned).where(users.c.user_id == cmd.seller_id)
    if await uow.conn.scalar(banned.with_for_update(read=True)):
        raise Forbidden(ACCOUNT_BANNED)
    row = await owned_ticket(uow, cmd.ticket_id, cmd.seller_id)
    refused = refusal(row, cmd.price, default_cap, utcnow())
    if refused is not None:
        raise BadRequest(refused)
    repriced = (
        await uow.execute(
            update(listings)
            .where(open_listing_of(cmd.ticket_id))
            .values(price=cmd.price, updated_at=utcnow())
            .returning(listings.c.listing_id, listings.c.state)
        )
    ).first()
    if repriced is not None and repriced.state != "active":
        raise Conflict(BEING_PURCHASED)  # rolled back: the price of a claimed listing stays
    event_type: type[ListingCreated] = ListingRepriced
    listing_id = repriced.listing_id if repriced is not None else None
    if listing_id is None:
        event_type = ListingCreated
        listing_id = await uow.conn.scalar(
            insert(listings)
            .values(
                ticket_id=row.ticket_id,
                seller_id=cmd.seller_id,
                event_id=row.event_id,
                type_id=row.type_id,
                price=cmd.price,
                currency=row.currency,
                original_price=row.original_price,
                seat=row.seat,
                state="active",
                event_name=row.event_name,
                event_start=row.event_start_date,
                event_end=row.event_end_date,
            )
            .returning(listings.c.listing_id)
        )
    uow.emit(
        event_type(
            listing_id=listing_id,
            ticket_id=row.ticket_id,
            seller_id=cmd.seller_id,
            event_id=row.event_id,
            price=str(cmd.price),
            currency=row.currency,
        ),
        aggregate_id=row.ticket_id,
    )
    return await _committed_with(uow, cmd.ticket_id)


async def _committed_with(uow: UnitOfWork, ticket_id: int) -> Any:
    """The ticket as this unit of work leaves it, read before its commit (its row is locked
    by `owned_ticket`, so no other change of its listing is in between)."""
    shown = await ticket_row(uow.conn, ticket_id)
    await uow.commit()
    return shown


async def withdraw(ticket_id: int, seller_id: int, uow: UnitOfWork) -> Any:
    """§9.5: the owner takes the ticket off the market; the ticket as it left it."""
    row = await owned_ticket(uow, ticket_id, seller_id)
    if row.event_end_date <= utcnow():  # its listing, if any, is no longer active (§10)
        raise BadRequest(NOT_LISTED)
    withdrawn = await cancel_listings(
        uow, open_listing_of(ticket_id), "withdrawn", notify=False, claimed_too=False
    )
    if not withdrawn:
        state = await uow.conn.scalar(
            select(listings.c.state).where(open_listing_of(ticket_id)).limit(1)
        )
        raise (Conflict(BEING_PURCHASED) if state in OPEN else BadRequest(NOT_LISTED))
    return await _committed_with(uow, ticket_id)


async def cancel_listings(
    uow: UnitOfWork,
    which: ColumnElement[bool],
    reason: str,
    notify: bool = True,
    claimed_too: bool = True,
) -> int:
    """Withdraw the active listings matching `which` (one ListingCancelled each). A listing a
    buyer has claimed is left to its purchase; when `claimed_too`, it is marked, so that if the
    buyer's charge fails it is cancelled for `reason` (`withdrawn_after_claim`) instead of
    going back on sale. One statement: a claim released meanwhile is seen as active, and
    cancelled. Sellers are told by email when `notify`."""
    state = listings.c.state
    change = update(listings).values(updated_at=utcnow())
    if claimed_too:
        change = change.where(which, state.in_(OPEN)).values(
            state=case((state == "active", "cancelled"), else_=state),
            withdrawn_for=case(
                (state == "purchasing", func.coalesce(listings.c.withdrawn_for, reason)),
                else_=listings.c.withdrawn_for,
            ),
        )
    else:
        change = change.where(which, state == "active").values(state="cancelled")
    rows = (await uow.execute(change.returning(*_CANCELLED, state))).all()
    cancelled = [row for row in rows if row.state == "cancelled"]
    for listing in cancelled:
        await _cancelled(uow, listing, reason, notify)
    return len(cancelled)


_CANCELLED = (
    listings.c.listing_id,
    listings.c.ticket_id,
    listings.c.seller_id,
    listings.c.event_name,
)


async def withdrawn_after_claim(uow: UnitOfWork, listing_id: int) -> bool:
    """A claim that failed (its charge declined or never made): the listing goes back on sale,
    unless it was withdrawn while claimed; then it is cancelled for that reason, and the
    seller told. False when the listing was not claimed (any more)."""
    state = listings.c.state
    row = (
        await uow.execute(
            update(listings)
            .where(listings.c.listing_id == listing_id, state == "purchasing")
            .values(
                state=case((listings.c.withdrawn_for.is_(None), "active"), else_="cancelled"),
                updated_at=utcnow(),
            )
            .returning(*_CANCELLED, state, listings.c.withdrawn_for)
        )
    ).first()
    if row is not None and row.state == "cancelled":
        await _cancelled(uow, row, row.withdrawn_for, notify=True)
    return row is not None


async def _cancelled(uow: UnitOfWork, listing: Any, reason: str, notify: bool) -> None:
    uow.emit(
        ListingCancelled(listing_id=listing.listing_id, ticket_id=listing.ticket_id, reason=reason),
        aggregate_id=listing.ticket_id,
    )
    if notify:
        await _tell_seller(uow, listing, reason)


REASONS = {
    "event_cancelled": "the event was cancelled",
    "seller_banned": "your account was suspended",
    "ticket_refunded": "the ticket was refunded",
    "ticket_used": "the ticket was checked in",
}


async def _tell_seller(uow: UnitOfWork, listing: Any, reason: str) -> None:
    seller = (await uow.execute(select(users).where(users.c.user_id == listing.seller_id))).first()
    if seller is not None and seller.email:  # (a ban's row before the registration: no address)
        await queue_mail(
            uow,
            seller.email,
            f"Your resale listing for {listing.event_name} was withdrawn",
            f"Hello {seller.first_name},\n\nYour listing of ticket #{listing.ticket_id} for "
            f"{listing.event_name} was withdrawn because {REASONS.get(reason, reason)}.\n",
        )
