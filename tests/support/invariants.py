"""One whole-system invariant check, read straight from a running System's database and broker.

Tests may read every schema (services never do). The check waits, bounded, for the system to
settle (relays publish, consumers drain, sweepers and recoveries run), re-evaluating every
rule until all hold; then it returns a report a test prints, else it fails naming each broken
rule with examples. Typical use at the end of a fault test:

    report = await check_invariants(system)
    print(f"injected {what}; invariants: {report}")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from services.kernel import broker, deadletters
from services.kernel.settings import SERVICES
from services.topology import subscriptions
from tests.support.infra import amqp_url
from tests.support.shop import db_rows as _db_rows
from tests.support.system import System


async def db_rows(system: System, sql: str, **params: Any) -> list[Any]:
    """Read the database, waiting out "too many clients" (other test runs share PostgreSQL)."""
    for attempt in range(40):
        try:
            return await _db_rows(system, sql, **params)
        except DBAPIError as exc:
            if "too many clients" not in str(exc) or attempt == 39:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


Rule = Callable[[System], Awaitable[tuple[str, list[str]]]]

# ---- the rules: each answers (what it proved, problems found) ------------------------------


async def _outboxes_published(system: System) -> tuple[str, list[str]]:
    total, problems = 0, []
    for schema in SERVICES:
        rows = await db_rows(
            system,
            f"SELECT count(*) AS n, count(*) FILTER (WHERE published_at IS NULL) AS left "
            f"FROM {schema}.outbox",
        )
        total += rows[0].n
        if rows[0].left:
            problems.append(f"{schema}: {rows[0].left} outbox rows unpublished")
    return f"{total} outbox rows all published", problems


async def _no_lost_event(system: System) -> tuple[str, list[str]]:
    """Every published event a consumer subscribes to is in that consumer's inbox, once."""
    checked, problems = 0, []
    for consumer, types in subscriptions().items():
        for producer in SERVICES:
            rows = await db_rows(
                system,
                f"SELECT o.type, o.event_id::text AS id, i.handled_count "
                f"FROM {producer}.outbox o LEFT JOIN {consumer}.inbox i USING (event_id) "
                f"WHERE o.published_at IS NOT NULL AND o.type = ANY(:types)",
                types=list(types),
            )
            checked += len(rows)
            lost = [r for r in rows if r.handled_count is None]
            if lost:
                problems.append(
                    f"{consumer} has not handled {len(lost)} {producer} events, e.g. "
                    f"{lost[0].type} {lost[0].id}"
                )
            twice = [r for r in rows if r.handled_count and r.handled_count > 1]
            if twice:
                problems.append(f"{consumer} handled {len(twice)} {producer} events twice")
    return f"{checked} deliveries each in its consumer's inbox once", problems


async def _dead_letters_empty(system: System) -> tuple[str, list[str]]:
    names = broker.Names(system.env["RESELLIO_BROKER_PREFIX"])
    # The real broker, not a test's proxy: the check must see it while a proxy is cut.
    connection = await broker.connect(amqp_url())
    problems = []
    async with connection:
        channel = await connection.channel()
        for consumer in subscriptions():
            letters = await deadletters.inspect(channel, names, consumer)
            if letters:
                problems.append(
                    f"{consumer} DLQ holds {len(letters)}: {letters[0].type} {letters[0].error}"
                )
    return f"{len(subscriptions())} dead-letter queues empty", problems


async def _inventory(system: System) -> tuple[str, list[str]]:
    """sold = issued tickets, sold + held ≤ capacity, held = cart lines, catalog agrees."""
    rows = await db_rows(
        system,
        """
        SELECT t.type_id, t.max_count, t.sold, t.held, e.status AS event_status,
               c.max_count AS catalog_max, c.type_id IS NULL AS catalog_missing,
               (SELECT count(*) FROM ordering.tickets k WHERE k.type_id = t.type_id
                  AND k.status IN ('valid', 'used')) AS live,
               (SELECT count(*) FROM ordering.tickets k WHERE k.type_id = t.type_id) AS issued,
               (SELECT coalesce(sum(quantity), 0) FROM ordering.cart_items i
                  WHERE i.type_id = t.type_id) AS in_carts
        FROM ordering.ticket_types t
        JOIN ordering.events e ON e.event_id = t.event_id
        LEFT JOIN catalog.ticket_types c ON c.type_id = t.type_id
        WHERE NOT t.deleted
        """,
    )
    problems = []
    for r in rows:
        # A cancelled event's tickets are refunded, not unsold: they still count as sold.
        counted = r.issued if r.event_status == "cancelled" else r.live
        if r.sold != counted:
            problems.append(f"type {r.type_id}: sold {r.sold} but {counted} tickets issued")
        if r.sold + r.held > r.max_count:
            problems.append(f"type {r.type_id}: sold {r.sold} + held {r.held} > {r.max_count}")
        if r.held != r.in_carts:
            problems.append(f"type {r.type_id}: held {r.held} but carts hold {r.in_carts}")
        if r.catalog_missing or r.catalog_max != r.max_count:
            problems.append(f"type {r.type_id}: catalog max {r.catalog_max} != {r.max_count}")
    sold = sum(r.sold for r in rows)
    return f"{len(rows)} ticket types: sold = issued ({sold}), within capacity", problems


async def _one_owner(system: System) -> tuple[str, list[str]]:
    """Each ticket has one owner, and resale's and catalog's projections say the same one."""
    rows = await db_rows(
        system,
        """
        SELECT k.ticket_id, k.owner_id, k.status, r.owner_id AS resale_owner,
               r.status AS resale_status, c.owner_id AS catalog_owner, c.valid AS catalog_valid
        FROM ordering.tickets k
        LEFT JOIN resale.tickets r USING (ticket_id)
        LEFT JOIN catalog.tickets c USING (ticket_id)
        """,
    )
    problems = []
    for r in rows:
        if r.resale_owner != r.owner_id or r.resale_status != r.status:
            problems.append(
                f"ticket {r.ticket_id}: ordering says {r.owner_id}/{r.status}, "
                f"resale {r.resale_owner}/{r.resale_status}"
            )
        # Catalog's `valid` is "not refunded": a ticket checked in (used) still counts as sold
        # and its holder is still told of the event (notify).
        if r.catalog_owner != r.owner_id or r.catalog_valid != (r.status != "refunded"):
            problems.append(
                f"ticket {r.ticket_id}: ordering says {r.owner_id}/{r.status}, "
                f"catalog {r.catalog_owner}/{r.catalog_valid}"
            )
    codes = await db_rows(
        system, "SELECT count(*) - count(DISTINCT code) AS dup FROM ordering.tickets"
    )
    if codes[0].dup:
        problems.append(f"{codes[0].dup} ticket codes shared by two tickets")
    return f"{len(rows)} tickets: one owner, the same in every projection", problems


async def _one_sale_per_listing(system: System) -> tuple[str, list[str]]:
    problems = []
    twice = await db_rows(
        system,
        "SELECT listing_id, count(*) AS n FROM resale.purchases WHERE status = 'completed' "
        "GROUP BY listing_id HAVING count(*) > 1",
    )
    problems += [f"listing {r.listing_id} sold {r.n} times" for r in twice]
    mismatched = await db_rows(
        system,
        """
        SELECT l.listing_id, l.state, count(p.*) FILTER (WHERE p.status = 'completed') AS done
        FROM resale.listings l LEFT JOIN resale.purchases p USING (listing_id)
        GROUP BY l.listing_id, l.state
        HAVING (l.state = 'sold') <> (count(p.*) FILTER (WHERE p.status = 'completed') = 1)
        """,
    )
    problems += [f"listing {r.listing_id} is {r.state} with {r.done} sales" for r in mismatched]
    stuck = await db_rows(
        system,
        "SELECT purchase_id, status FROM resale.purchases "
        "WHERE status IN ('charging', 'processing')",
    )
    problems += [f"purchase {r.purchase_id} still {r.status}" for r in stuck]
    moved = await db_rows(
        system,
        """
        SELECT p.purchase_id FROM resale.purchases p
        JOIN resale.listings l USING (listing_id)
        JOIN ordering.listings o ON o.listing_id = p.listing_id
        WHERE p.status = 'completed' AND o.state <> 'sold'
        """,
    )
    problems += [
        f"purchase {r.purchase_id} completed but ordering's listing not sold" for r in moved
    ]
    count = await db_rows(system, "SELECT count(*) AS n FROM resale.listings")
    return f"{count[0].n} listings: each sold at most once", problems


async def _payments_matched(system: System) -> tuple[str, list[str]]:
    """Every captured charge bought tickets (or was refunded in full), and a completed order's
    was not refunded at all; nothing left pending."""
    problems = []
    orders = await db_rows(
        system,
        """
        SELECT p.payment_id, p.amount, p.refunded, o.order_id, o.status,
               (SELECT coalesce(sum(quantity), 0) FROM ordering.order_items i
                  WHERE i.order_id = o.order_id) AS bought,
               (SELECT count(*) FROM ordering.tickets k WHERE k.order_id = o.order_id) AS issued
        FROM ordering.payments p
        LEFT JOIN ordering.orders o ON p.authorize_key = 'order-' || o.order_id
        WHERE p.state = 'captured'
        """,
    )
    for r in orders:
        paid_for = r.status in ("completed", "refunded", "partially_refunded")
        if not (paid_for and r.issued == r.bought) and r.refunded != r.amount:
            problems.append(
                f"order {r.order_id} ({r.status}): captured {r.amount}, refunded {r.refunded}, "
                f"{r.issued}/{r.bought} tickets issued"
            )
        if r.status == "completed" and r.refunded:  # refunds mark the order (or fail it)
            problems.append(f"order {r.order_id} completed, yet {r.refunded} of it refunded")
    unpaid = await db_rows(
        system,
        """
        SELECT o.order_id FROM ordering.orders o
        LEFT JOIN ordering.payments p ON p.authorize_key = 'order-' || o.order_id
        WHERE o.status = 'completed' AND (p.state IS DISTINCT FROM 'captured')
        """,
    )
    problems += [f"order {r.order_id} completed without a captured payment" for r in unpaid]
    pending = await db_rows(system, "SELECT order_id FROM ordering.orders WHERE status='pending'")
    problems += [f"order {r.order_id} still pending" for r in pending]
    sales = await db_rows(
        system,
        """
        SELECT p.payment_id, p.amount, p.refunded, s.purchase_id, s.status
        FROM resale.payments p
        LEFT JOIN resale.purchases s
          ON p.authorize_key = 'resale-purchase-' || s.purchase_id || '-authorize'
        WHERE p.state = 'captured'
        """,
    )
    for r in sales:
        if r.status != "completed" and r.refunded != r.amount:
            problems.append(
                f"resale purchase {r.purchase_id} ({r.status}): captured {r.amount}, "
                f"refunded {r.refunded}"
            )
    return (
        f"{len(orders)} order charges and {len(sales)} resale charges matched by tickets "
        "or refunds",
        problems,
    )


async def _no_stale_hold(system: System) -> tuple[str, list[str]]:
    """No hold outlives its expiry by more than a sweep (carts mid-checkout excepted)."""
    rows = await db_rows(
        system,
        """
        SELECT i.cart_item_id FROM ordering.cart_items i JOIN ordering.carts c USING (user_id)
        WHERE i.hold_expires_at < now() - interval '3 seconds'
          AND (c.checkout_started_at IS NULL
               OR c.checkout_started_at < now() - interval '2 minutes')
        """,
    )
    count = await db_rows(system, "SELECT count(*) AS n FROM ordering.cart_items")
    return (
        f"{count[0].n} holds, none past expiry",
        [f"hold {r.cart_item_id} past its expiry" for r in rows],
    )


RULES: tuple[Rule, ...] = (
    _outboxes_published,
    _no_lost_event,
    _dead_letters_empty,
    _inventory,
    _one_owner,
    _one_sale_per_listing,
    _payments_matched,
    _no_stale_hold,
)


@dataclass
class Report:
    proved: list[str] = field(default_factory=list)
    waited_s: float = 0.0

    def __str__(self) -> str:
        return "; ".join(self.proved) + f" (settled in {self.waited_s:.1f}s): ok"


async def check_invariants(system: System, timeout: float = 90.0) -> Report:
    """Wait (bounded) until every rule holds at once; fail naming what still breaks."""
    started = time.monotonic()
    while True:
        proved: list[str] = []
        problems: list[str] = []
        for rule in RULES:
            said, broken = await rule(system)
            proved.append(said)
            problems += broken
        waited = time.monotonic() - started
        if not problems:
            return Report(proved, waited)
        if waited > timeout:
            shown = "\n  ".join(problems[:40])
            raise AssertionError(f"invariants broken after {waited:.0f}s:\n  {shown}")
        await asyncio.sleep(0.5)
