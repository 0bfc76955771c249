"""Tables of the resale schema: its projections of other services, and its own listings,
purchases and payouts.

The marketplace reads `listings` alone: the event's name and dates are copied onto each open
listing (and kept current from catalog's events), so every sort walks one partial index of
active listings in order. Query plans with 100,000 listings: see services/resale/marketplace.py.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    text,
)

from services.kernel.event_copies import locations_table
from services.kernel.idempotency import idempotency_table
from services.kernel.mail import mail_table
from services.kernel.outbox import messaging_tables
from services.kernel.payments import payment_tables

metadata = MetaData(schema="resale")
outbox, inbox = messaging_tables(metadata)
payments, payment_operations = payment_tables(metadata)
idempotency_keys = idempotency_table(metadata)
mail_queue = mail_table(metadata)
NOW = text("now()")
ACTIVE = text("state = 'active'")

# ---- projections (from catalog, ordering and auth events) ----------------------------------

events = Table(
    "events",
    metadata,
    Column("event_id", BigInteger, primary_key=True),
    Column("organizer_id", BigInteger, nullable=False),
    Column("name", Text, nullable=False),
    Column("start_date", DateTime(timezone=True), nullable=False),
    Column("end_date", DateTime(timezone=True), nullable=False),
    Column("location_id", BigInteger, nullable=False),
    Column("location_name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("resale_price_cap_percent", Integer),
    # catalog's sequence of the event that wrote the fields, and the status (event_copies).
    Column("seq", BigInteger),
    Column("status_seq", BigInteger),
    Index("events_by_location", "location_id"),
)

# catalog's locations' newest names, for the events' location_name (event_copies).
locations = locations_table(metadata)

ticket_types = Table(
    "ticket_types",
    metadata,
    Column("type_id", BigInteger, primary_key=True),
    Column("event_id", BigInteger, nullable=False),
    Column("description", Text),
    Column("seq", BigInteger),  # catalog's sequence of the event that wrote the row
)

tickets = Table(
    "tickets",
    metadata,
    Column("ticket_id", BigInteger, primary_key=True),
    Column("event_id", BigInteger, nullable=False, index=True),
    Column("type_id", BigInteger, nullable=False),
    Column("owner_id", BigInteger, nullable=False),
    # The sequence of the event that named the holder: an older one applied later (a replay's
    # reprocess, a retry) does not take the ticket back.
    Column("holder_seq", BigInteger),
    Column("original_price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),  # valid | used | refunded
    Column("seat", Text),
)

users = Table(
    "users",
    metadata,
    Column("user_id", BigInteger, primary_key=True),
    Column("email", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("seq", BigInteger),  # auth's sequence of the event that wrote the name
    # The ban as auth last said it, and the sequence of the ban or unban that wrote it.
    Column("banned", Boolean, nullable=False, server_default=text("false")),
    Column("state_seq", BigInteger),
)

# ---- resale's own data ---------------------------------------------------------------------

# One row per time a ticket is put up for sale; repricing changes the open row.
# state: active → purchasing (claimed by a buyer) → sold; active → cancelled; a declined
# charge puts a purchasing listing back to active, or cancels it when it was withdrawn while
# claimed (`withdrawn_for`: the event cancelled, the seller banned, the ticket refunded).
listings = Table(
    "listings",
    metadata,
    Column("listing_id", BigInteger, primary_key=True, autoincrement=True),
    Column("ticket_id", BigInteger, nullable=False),
    Column("seller_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("type_id", BigInteger, nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("original_price", Numeric(12, 2), nullable=False),
    Column("seat", Text),
    Column("state", Text, nullable=False),
    Column("withdrawn_for", Text),  # ListingCancelled's reason, applied if the claim fails
    # Copies of the event's name and dates, so the marketplace sorts on one table.
    Column("event_name", Text, nullable=False),
    Column("event_start", DateTime(timezone=True), nullable=False),
    Column("event_end", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # At most one open listing per ticket, whatever the concurrency.
    Index(
        "listings_one_open_per_ticket",
        "ticket_id",
        unique=True,
        postgresql_where=text("state IN ('active', 'purchasing')"),
    ),
    Index("listings_by_ticket", "ticket_id", "listing_id"),
    Index("listings_by_seller", "seller_id", "state"),
    Index("listings_by_event", "event_id", "state"),
    Index("market_by_date", "event_start", "ticket_id", postgresql_where=ACTIVE),
    Index("market_by_price", "price", "ticket_id", postgresql_where=ACTIVE),
    Index("market_by_original", "original_price", "ticket_id", postgresql_where=ACTIVE),
    Index("market_by_name", text('event_name COLLATE "C"'), "ticket_id", postgresql_where=ACTIVE),
    Index("market_by_event", "event_id", "price", postgresql_where=ACTIVE),
    # X-Total-Count of the unfiltered marketplace: an index-only scan, not a table scan.
    Index(
        "market_count",
        "event_end",
        postgresql_include=["seller_id"],
        postgresql_where=ACTIVE,
    ),
)

# status: charging (listing claimed, card being charged) → processing (charged, ListingSold
# out, waiting for ordering's transfer) → completed | failed.
purchases = Table(
    "purchases",
    metadata,
    Column("purchase_id", BigInteger, primary_key=True, autoincrement=True),
    Column("listing_id", BigInteger, nullable=False, index=True),
    Column("ticket_id", BigInteger, nullable=False, index=True),
    Column("event_id", BigInteger, nullable=False, index=True),
    Column("buyer_id", BigInteger, nullable=False),
    Column("seller_id", BigInteger, nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("payment_id", Text),
    Column("idempotency_key", Text),
    Column("failure_reason", Text),
    Column("refunded_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("completed_at", DateTime(timezone=True)),
    # Not unique: a key freed by an answer that is not kept (a 503) or expired starts a new
    # purchase under it; the newest one is the key's (services/resale/purchase.py).
    Index(
        "purchases_by_buyer_key",
        "buyer_id",
        "idempotency_key",
        "purchase_id",
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
)

# What the seller is owed for a sale: price minus the resale fee. pending until ordering has
# moved the ticket, then payable; cancelled when the transfer was refused.
payouts = Table(
    "payouts",
    metadata,
    Column("purchase_id", BigInteger, primary_key=True),
    Column("seller_id", BigInteger, nullable=False, index=True),
    Column("gross", Numeric(12, 2), nullable=False),
    Column("fee", Numeric(12, 2), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
