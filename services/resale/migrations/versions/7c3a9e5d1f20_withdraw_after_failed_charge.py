"""why a listing a buyer had claimed was withdrawn meanwhile (event cancelled, seller banned,
ticket refunded or used): if the buyer's charge then fails, the listing is cancelled for that
reason instead of going back on sale

Revision ID: 7c3a9e5d1f20
Revises: b5e9d3a7c2f4
Create Date: 2026-11-28 08:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7c3a9e5d1f20"
down_revision = "b5e9d3a7c2f4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("listings", sa.Column("withdrawn_for", sa.Text()), schema="resale")


def downgrade() -> None:
    op.drop_column("listings", "withdrawn_for", schema="resale")
