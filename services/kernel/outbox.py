"""Outbox (the service's event log) and inbox tables, the same in every service schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID


def messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and inbox of the metadata's schema (created once per metadata)."""
    schema = metadata.schema
    if f"{schema}.outbox" in metadata.tables:
        return metadata.tables[f"{schema}.outbox"], metadata.tables[f"{schema}.inbox"]
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("type", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("correlation_id", Text),
        Column("causation_id", Text),
        Column("payload", JSONB, nullable=False),
        # Assigned by the relay when it publishes: gap-free, in publish order.
        Column("sequence", BigInteger, unique=True),
        Column("published_at", DateTime(timezone=True)),
        Index("outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        Index("outbox_type_id", "type", "id"),
        Index("outbox_aggregate", "aggregate_id", "id"),
        Index("outbox_occurred_at", "occurred_at"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("producer", Text, nullable=False),
        Column("type", Text, nullable=False),
        Column("sequence", BigInteger, nullable=False),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("handled_count", Integer, nullable=False, server_default=text("1")),
    )
    return outbox, inbox
