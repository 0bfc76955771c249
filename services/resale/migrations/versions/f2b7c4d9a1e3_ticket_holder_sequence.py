"""the sequence of the event that named a ticket's holder, so that an older transfer applied
later (a replay's reprocess, a retry) does not take the ticket back

Revision ID: f2b7c4d9a1e3
Revises: e6f1a3c8d2b4
Create Date: 2026-11-28 01:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "f2b7c4d9a1e3"
down_revision = "e6f1a3c8d2b4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("holder_seq", sa.BigInteger()), schema="resale")


def downgrade() -> None:
    op.drop_column("tickets", "holder_seq", schema="resale")
