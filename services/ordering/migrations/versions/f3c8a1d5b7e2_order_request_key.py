"""the Idempotency-Key (and the path it was sent to) of the checkout that placed an order: crash
recovery stores that request's answer when it settles the order

Revision ID: f3c8a1d5b7e2
Revises: e9b2c5d7a3f1
Create Date: 2026-11-28 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "f3c8a1d5b7e2"
down_revision = "e9b2c5d7a3f1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("request_path", sa.Text()), schema="ordering")
    op.add_column("orders", sa.Column("request_key", sa.Text()), schema="ordering")


def downgrade() -> None:
    op.drop_column("orders", "request_key", schema="ordering")
    op.drop_column("orders", "request_path", schema="ordering")
