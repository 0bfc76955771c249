"""notify changes of the events and ticket types that the marketplace's pages are read from

Revision ID: c4e8a1f27b90
Revises: 5d2c9e7b1a36
Create Date: 2026-11-27 09:00:00
"""

from alembic import op

from services.kernel.answers import notify_trigger_sql

revision = "c4e8a1f27b90"
down_revision = "5d2c9e7b1a36"
branch_labels = None
depends_on = None

# GET /api/resale/marketplace shows the venue and the type's description and searches them.
TABLES = ["events", "ticket_types"]


def upgrade() -> None:
    for statement in notify_trigger_sql("resale", TABLES):
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:  # the function stays: the listings' trigger still calls it
        op.execute(f'DROP TRIGGER IF EXISTS {table}_changed ON "resale"."{table}"')
