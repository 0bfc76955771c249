"""the order a cart's checkout flag belongs to: only that order's completion or failure
clears it (a crashed checkout's recovery must not clear a later checkout's flag)

Revision ID: e9b2c5d7a3f1
Revises: d4a8f2c6e1b9
Create Date: 2026-11-28 09:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "e9b2c5d7a3f1"
down_revision = "d4a8f2c6e1b9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("carts", sa.Column("checkout_order_id", sa.BigInteger()), schema="ordering")


def downgrade() -> None:
    op.drop_column("carts", "checkout_order_id", schema="ordering")
