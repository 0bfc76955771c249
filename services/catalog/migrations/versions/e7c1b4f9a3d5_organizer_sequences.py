"""the sequence of the auth events that wrote an organizer's `verified` and `account_state`,
so that an older event applied later (a retry, a replay's reprocess) changes nothing newer

Revision ID: e7c1b4f9a3d5
Revises: a3c5e8f1b2d6
Create Date: 2026-11-28 03:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "e7c1b4f9a3d5"
down_revision = "a3c5e8f1b2d6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("organizers", sa.Column("verified_seq", sa.BigInteger()), schema="catalog")
    op.add_column("organizers", sa.Column("state_seq", sa.BigInteger()), schema="catalog")


def downgrade() -> None:
    op.drop_column("organizers", "state_seq", schema="catalog")
    op.drop_column("organizers", "verified_seq", schema="catalog")
