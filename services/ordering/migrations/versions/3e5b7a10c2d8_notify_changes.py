"""notify changes of the inventory that live availability is read from

Revision ID: 3e5b7a10c2d8
Revises: c7ea8184f1ac
Create Date: 2026-11-26 03:00:00
"""

from alembic import op

from services.kernel.answers import drop_trigger_sql, notify_trigger_sql

revision = "3e5b7a10c2d8"
down_revision = "c7ea8184f1ac"
branch_labels = None
depends_on = None

TABLES = ["ticket_types"]  # GET /internal/availability (the composed event page)


def upgrade() -> None:
    for statement in notify_trigger_sql("ordering", TABLES):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_trigger_sql("ordering", TABLES):
        op.execute(statement)
