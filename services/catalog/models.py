"""Tables of the catalog schema, and the indexes that keep the event listing fast.

Query plans checked with 100,000 events (see the note in services/catalog/listing.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from services.kernel.outbox import messaging_tables

metadata = MetaData(schema="catalog")
outbox, inbox = messaging_tables(metadata)

locations = Table(
    "locations",
    metadata,
    Column("location_id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("zipcode", Text),
    Column("city", Text, nullable=False),
    Column("country", Text, nullable=False),
    Index("locations_by_name", text('name COLLATE "C"'), "location_id"),
)

events = Table(
    "events",
    metadata,
    Column("event_id", Integer, primary_key=True),
    Column("organizer_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("start_date", DateTime(timezone=True), nullable=False),
    Column("end_date", DateTime(timezone=True), nullable=False),
    Column("minimum_age", Integer),
    Column(
        "location_id",
        Integer,
        ForeignKey("catalog.locations.location_id", ondelete="RESTRICT"),
        nullable=False,
    ),
    Column("status", Text, nullable=False),
    Column("categories", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Lower-cased copy for the case-insensitive `categories` filter (GIN, overlap operator).
    Column("categories_key", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Sum of max_count of the event's ticket types, kept in the same transaction as they change.
    Column("total_tickets", BigInteger, nullable=False, server_default=text("0")),
    Column("resale_price_cap_percent", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("events_by_start", "start_date", "event_id"),
    Index("events_by_name", text('name COLLATE "C"'), "event_id"),
    Index("events_by_organizer", "organizer_id", "event_id"),
    Index("events_by_location", "location_id"),
    Index("events_by_status", "status", "start_date", "event_id"),
    Index("events_categories", "categories_key", postgresql_using="gin"),
    Index(
        "events_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}
    ),
    Index(
        "events_description_trgm",
        "description",
        postgresql_using="gin",
        postgresql_ops={"description": "gin_trgm_ops"},
    ),
)

ticket_types = Table(
    "ticket_types",
    metadata,
    Column("type_id", Integer, primary_key=True),
    Column(
        "event_id",
        Integer,
        ForeignKey("catalog.events.event_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("description", Text),
    Column("max_count", Integer, nullable=False),
    Column("price", Numeric(10, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("available_from", DateTime(timezone=True), nullable=False),
    # Projection of ordering's tickets: valid tickets now, and every ticket ever issued.
    Column("sold", Integer, nullable=False, server_default=text("0")),
    Column("issued", Integer, nullable=False, server_default=text("0")),
    # Drawn from catalog.ticket_type_revisions at each change (catalog.TicketType* events and
    # ordering's limit carry it): later changes have higher numbers, none is used twice.
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    Index("ticket_types_by_event_price", "event_id", "price"),
    Index("ticket_types_by_price", "price", "event_id"),  # a narrow price range first
    Index("ticket_types_unsold", "event_id", postgresql_where=text("sold < max_count")),
)

# Projection of auth's organizers: who may write (verified and active).
organizers = Table(
    "organizers",
    metadata,
    Column("organizer_id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("verified", Boolean, nullable=False, server_default=text("false")),
    Column("account_state", Text, nullable=False),
    # auth's sequence of the events that wrote `verified` and `account_state`
    Column("verified_seq", BigInteger),
    Column("state_seq", BigInteger),
)

# Projection of ordering's tickets: who holds a valid ticket of which event (notify counts).
tickets = Table(
    "tickets",
    metadata,
    Column("ticket_id", BigInteger, primary_key=True),
    Column("event_id", Integer),
    Column("type_id", Integer),
    Column("owner_id", Integer),
    # The sequence of the event that named the holder: an older one applied later (a replay's
    # reprocess, a retry) does not take the ticket back.
    Column("holder_seq", BigInteger),
    Column("valid", Boolean, nullable=False),
    Index("tickets_valid_by_event", "event_id", "owner_id", postgresql_where=text("valid")),
)
