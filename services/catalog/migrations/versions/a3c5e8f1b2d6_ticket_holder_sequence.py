"""the sequence of the event that named a ticket's holder, so that an older transfer applied
later (a replay's reprocess, a retry) does not take the ticket back

Revision ID: a3c5e8f1b2d6
Revises: 9d2f6b1e4a07
Create Date: 2026-11-28 01:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "a3c5e8f1b2d6"
down_revision = "9d2f6b1e4a07"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("holder_seq", sa.BigInteger()), schema="catalog")


def downgrade() -> None:
    op.drop_column("tickets", "holder_seq", schema="catalog")
