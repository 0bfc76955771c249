"""Tables of the ordering schema: inventory, carts (holds), orders, tickets, and projections."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from services.kernel.event_copies import locations_table
from services.kernel.idempotency import idempotency_table
from services.kernel.mail import mail_table
from services.kernel.outbox import messaging_tables
from services.kernel.payments import payment_tables

metadata = MetaData(schema="ordering")
outbox, inbox = messaging_tables(metadata)
mail_queue = mail_table(metadata)
payments, payment_operations = payment_tables(metadata)
idempotency_keys = idempotency_table(metadata)

NOW = text("now()")

# ---- projections of other services' events ------------------------------------------------

# catalog's events, as far as selling needs them. `seq` is the producer sequence of the last
# event applied, so an older event delivered late never overwrites a newer one.
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
    Column("status", Text, nullable=False),  # pending | created | rejected | cancelled
    # catalog's sequence of the event that wrote the fields, and the status (event_copies).
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    Column("status_seq", BigInteger, nullable=False, server_default=text("0")),
)

# catalog's locations' newest names, for the events' location_name (event_copies).
locations = locations_table(metadata)

# A ticket type is both catalog's projection (price, capacity, sale window) and ordering's
# inventory (sold, held). The CHECK is the last line of defence; claims are conditional.
ticket_types = Table(
    "ticket_types",
    metadata,
    Column("type_id", BigInteger, primary_key=True),
    Column("event_id", BigInteger, nullable=False, index=True),
    Column("description", Text),
    Column("price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("available_from", DateTime(timezone=True), nullable=False),
    Column("max_count", Integer, nullable=False),
    Column("sold", Integer, nullable=False, server_default=text("0")),
    Column("held", Integer, nullable=False, server_default=text("0")),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    # catalog's newest revision of the type whose max_count is in effect (holds.limit).
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("sold >= 0 AND held >= 0", name="inventory_not_negative"),
)

# auth's users: names and email for mails and PDF tickets.
users = Table(
    "users",
    metadata,
    Column("user_id", BigInteger, primary_key=True),
    Column("email", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("seq", BigInteger),  # auth's sequence of the event that wrote the names
)

# resale's listings: a ticket's active listing (its price, and check-in refusal) and sales.
listings = Table(
    "listings",
    metadata,
    Column("listing_id", BigInteger, primary_key=True),
    Column("ticket_id", BigInteger, nullable=False, index=True),
    Column("seller_id", BigInteger),
    Column("price", Numeric(12, 2)),
    Column("currency", Text),
    Column("state", Text, nullable=False),  # active | cancelled | sold
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
)

# ---- ordering's own data ------------------------------------------------------------------

carts = Table(
    "carts",
    metadata,
    Column("user_id", BigInteger, primary_key=True),
    # Set while a checkout of this cart runs (409 "Checkout already in progress").
    Column("checkout_started_at", DateTime(timezone=True)),
    # The order of the checkout that set the flag: only its completion or failure clears it.
    Column("checkout_order_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# A cart line is a hold on inventory: its quantity is counted in ticket_types.held.
cart_items = Table(
    "cart_items",
    metadata,
    Column("cart_item_id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("ordering.carts.user_id"), nullable=False),
    Column("type_id", BigInteger, nullable=False, index=True),
    Column("quantity", Integer, nullable=False),
    Column("hold_expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_id", "type_id", name="cart_items_one_line_per_type"),
    CheckConstraint("quantity > 0", name="cart_items_quantity_positive"),
    Index("cart_items_expiry", "hold_expires_at"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    # pending | completed | failed | refunded | partially_refunded
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("total_amount", Numeric(12, 2), nullable=False),
    Column("payment_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # The Idempotency-Key of the checkout that placed it, and the path it was sent to: crash
    # recovery stores that request's answer when it settles the order.
    Column("request_path", Text),
    Column("request_key", Text),
    Index("orders_by_user", "user_id", "created_at"),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", BigInteger, ForeignKey("ordering.orders.order_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("ticket_type_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_name", Text, nullable=False),
    Column("ticket_type_description", Text),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(12, 2), nullable=False),
)

tickets = Table(
    "tickets",
    metadata,
    Column("ticket_id", BigInteger, primary_key=True, autoincrement=True),
    Column("order_id", BigInteger, ForeignKey("ordering.orders.order_id"), nullable=False),
    Column("type_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False, index=True),
    Column("owner_id", BigInteger, nullable=False, index=True),
    Column("original_price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    # The secret the PDF's QR code carries (>= 128 random bits); replaced on every resale.
    Column("code", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default=text("'valid'")),  # valid|used|refunded
    Column("seat", Text),
    Column("checked_in_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
