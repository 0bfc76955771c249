"""a ticket type's revision: drawn from a sequence at each change

Carried in catalog.TicketType* events and in the limit catalog sets in ordering before it
commits a lower capacity or a deletion, so that ordering never applies an older capacity over a
newer limit. A sequence, not a count: a change rolled back after its limit reached ordering
never hands its number to the next change.

Revision ID: 9d2f6b1e4a07
Revises: 7c1f0d2a9e41
Create Date: 2026-11-27 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "9d2f6b1e4a07"
down_revision = "7c1f0d2a9e41"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE catalog.ticket_type_revisions")
    op.add_column(
        "ticket_types",
        sa.Column("revision", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        schema="catalog",
    )


def downgrade() -> None:
    op.drop_column("ticket_types", "revision", schema="catalog")
    op.execute("DROP SEQUENCE catalog.ticket_type_revisions")
