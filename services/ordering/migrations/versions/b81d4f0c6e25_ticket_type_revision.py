"""a ticket type's revision, as catalog counts its changes

The newest revision whose capacity is in effect: set by catalog's limit (`POST
/internal/ticket-types/{id}/limit`) before it commits a lower capacity or a deletion, and by
catalog.TicketType* events; an event older than the limit does not bring its capacity back.

Revision ID: b81d4f0c6e25
Revises: 5a9c3e71d4b2
Create Date: 2026-11-27 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b81d4f0c6e25"
down_revision = "5a9c3e71d4b2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ticket_types",
        sa.Column("revision", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        schema="ordering",
    )


def downgrade() -> None:
    op.drop_column("ticket_types", "revision", schema="ordering")
