"""Events catalog reacts to: auth's organizer decisions and bans (who may write), ordering's
tickets (sold counts, who holds a valid ticket). Every handler is idempotent."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert

from contracts.auth import (
    OrganizerRejected,
    OrganizerVerified,
    UserBanned,
    UserRegistered,
    UserUnbanned,
)
from contracts.envelope import Envelope
from contracts.ordering import TicketPurchased, TicketRefunded, TicketTransferred
from services.catalog.models import organizers, tickets
from services.kernel.consumer import Handler, bulk, last_per_key
from services.kernel.db import UnitOfWork
from services.kernel.projections import Projection, newest, older_than

# ---- organizers ----------------------------------------------------------------------------


# Each of `verified` and `account_state` is written only by an auth event newer than the one
# that wrote it (`verified_seq`, `state_seq`): a ban, an unban or a decision applied again later
# (a retry, a replay's reprocess) leaves the newer one's value.


def _organizer_state(sequence: int | ColumnElement[int], **state: object) -> dict[str, object]:
    changes: dict[str, object] = {}
    if "verified" in state:
        changes |= newest(organizers, "verified_seq", sequence, {"verified": state["verified"]})
    if "account_state" in state:
        changes |= newest(
            organizers, "state_seq", sequence, {"account_state": state["account_state"]}
        )
    return changes


async def _set_organizer(
    uow: UnitOfWork, organizer_id: int, user_id: int, sequence: int, **state: object
) -> None:
    stmt = insert(organizers).values(
        organizer_id=organizer_id,
        user_id=user_id,
        verified=state.get("verified", False),
        account_state=state.get("account_state", "active"),
        verified_seq=sequence if "verified" in state else None,
        state_seq=sequence if "account_state" in state else None,
    )
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[organizers.c.organizer_id],
            set_=_organizer_state(sequence, **state),
        )
    )


@bulk
async def on_user_registered(items: list[tuple[UserRegistered, Envelope]], uow: UnitOfWork) -> None:
    organizers_registered = [(e, envelope) for e, envelope in items if e.role == "organizer"]
    rows = [
        {
            "organizer_id": e.role_id,
            "user_id": e.user_id,
            "verified": bool(e.is_verified),
            "account_state": e.account_state,
            "verified_seq": envelope.sequence,
            "state_seq": envelope.sequence,
        }
        for e, envelope in last_per_key(organizers_registered, lambda e: e.role_id)
    ]
    if rows:
        stmt = insert(organizers)
        seq = stmt.excluded.verified_seq
        state = {"verified": stmt.excluded.verified, "account_state": stmt.excluded.account_state}
        await uow.execute(
            stmt.on_conflict_do_update(
                index_elements=[organizers.c.organizer_id],
                set_={"user_id": stmt.excluded.user_id, **_organizer_state(seq, **state)},
            ),
            rows,
        )


async def on_organizer_verified(
    event: OrganizerVerified, envelope: Envelope, uow: UnitOfWork
) -> None:
    state: dict[str, object] = {"verified": True}
    if event.account_state:  # a ban-user ban outlives the approval
        state["account_state"] = event.account_state
    await _set_organizer(uow, event.organizer_id, event.user_id, envelope.sequence, **state)


async def on_organizer_rejected(
    event: OrganizerRejected, envelope: Envelope, uow: UnitOfWork
) -> None:
    state = {"verified": False, "account_state": event.account_state or "banned"}
    await _set_organizer(uow, event.organizer_id, event.user_id, envelope.sequence, **state)


async def on_ban_changed(
    event: UserBanned | UserUnbanned, envelope: Envelope, uow: UnitOfWork
) -> None:
    if event.role == "organizer":
        state = {"account_state": event.account_state}
        await _set_organizer(uow, event.role_id, event.user_id, envelope.sequence, **state)


# ---- tickets ---------------------------------------------------------------------------------


# The counts of several types in one statement ($1 the types, ascending; $2 sold, $3 issued):
# their rows are locked in type order first, as by every batch, so that two batches never wait
# for each other crosswise.
_COUNTS = """
WITH locked AS (
  SELECT type_id FROM catalog.ticket_types WHERE type_id = ANY($1::bigint[])
  ORDER BY type_id FOR UPDATE
)
UPDATE catalog.ticket_types t SET sold = t.sold + u.sold, issued = t.issued + u.issued
FROM unnest($1::bigint[], $2::integer[], $3::integer[]) AS u(type_id, sold, issued)
WHERE t.type_id = u.type_id AND (SELECT count(*) FROM locked) >= 0
"""
_TICKETS_PURCHASED = """
INSERT INTO catalog.tickets (ticket_id, event_id, type_id, owner_id, holder_seq, valid)
SELECT u.*, true
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u
ON CONFLICT (ticket_id) DO NOTHING
RETURNING ticket_id
"""


async def _count(uow: UnitOfWork, sold: Counter[int], issued: Counter[int]) -> None:
    types = sorted(t for t in issued.keys() | sold.keys() if t is not None)
    if types:
        await uow.fetchval(_COUNTS, types, [sold[t] for t in types], [issued[t] for t in types])


@bulk
async def on_ticket_purchased(
    items: list[tuple[TicketPurchased, Envelope]], uow: UnitOfWork
) -> None:
    purchases = {e.ticket_id: e for e, _ in items}
    sequences = {e.ticket_id: envelope.sequence for e, envelope in items}
    events = list(purchases.values())
    rows = await uow.fetch(
        _TICKETS_PURCHASED,
        [e.ticket_id for e in events],
        [e.event_id for e in events],
        [e.type_id for e in events],
        [e.owner_id for e in events],
        [sequences[e.ticket_id] for e in events],
    )
    fresh = {row[0] for row in rows}
    sold = Counter(purchases[t].type_id for t in fresh)
    issued = Counter(sold)
    # A later event of a ticket arrived first: complete its row, count it as issued once.
    for ticket_id in sorted(purchases.keys() - fresh):
        event = purchases[ticket_id]
        completed = await uow.execute(
            update(tickets)
            .where(tickets.c.ticket_id == ticket_id, tickets.c.type_id.is_(None))
            .values(event_id=event.event_id, type_id=event.type_id)
            .returning(tickets.c.valid)
        )
        row = completed.first()
        if row is not None:
            issued[event.type_id] += 1
            sold[event.type_id] += 1 if row.valid else 0
    await _count(uow, sold, issued)


async def on_ticket_transferred(
    event: TicketTransferred, envelope: Envelope, uow: UnitOfWork
) -> None:
    await uow.execute(  # unless a later event already named the holder
        insert(tickets)
        .values(
            ticket_id=event.ticket_id,
            owner_id=event.to_user_id,
            holder_seq=envelope.sequence,
            valid=True,
        )
        .on_conflict_do_update(
            index_elements=[tickets.c.ticket_id],
            set_={"owner_id": event.to_user_id, "holder_seq": envelope.sequence},
            where=older_than(tickets.c.holder_seq, envelope.sequence),
        )
    )


async def on_ticket_refunded(event: TicketRefunded, envelope: Envelope, uow: UnitOfWork) -> None:
    refunded = await uow.execute(
        update(tickets)
        .where(tickets.c.ticket_id == event.ticket_id, tickets.c.valid)
        .values(valid=False)
        .returning(tickets.c.type_id)
    )
    row = refunded.first()
    if row is not None:
        await _count(uow, Counter({row.type_id: -1}), Counter())
        return
    known = await uow.conn.scalar(
        select(tickets.c.ticket_id).where(tickets.c.ticket_id == event.ticket_id)
    )
    if known is None:  # refund seen before the purchase: the purchase will count it as issued
        await uow.execute(
            insert(tickets).values(
                ticket_id=event.ticket_id,
                event_id=event.event_id,
                owner_id=event.owner_id,
                valid=False,
            )
        )


HANDLERS: dict[str, Handler] = {
    "auth.UserRegistered": on_user_registered,
    "auth.OrganizerVerified": on_organizer_verified,
    "auth.OrganizerRejected": on_organizer_rejected,
    "auth.UserBanned": on_ban_changed,
    "auth.UserUnbanned": on_ban_changed,
    "ordering.TicketPurchased": on_ticket_purchased,
    "ordering.TicketTransferred": on_ticket_transferred,
    "ordering.TicketRefunded": on_ticket_refunded,
}

# Rebuildable from auth's event log. The ticket projection is not listed: its counts live on
# ticket_types (catalog's own rows), so emptying `tickets` alone would count sales twice.
PROJECTION = Projection(
    tables={"organizers": ("verified_seq", "state_seq")},
    events=[
        "auth.UserRegistered",
        "auth.OrganizerVerified",
        "auth.OrganizerRejected",
        "auth.UserBanned",
        "auth.UserUnbanned",
    ],
)
