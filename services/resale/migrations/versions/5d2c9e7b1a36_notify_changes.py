"""notify changes of the listings that the event page's resale summary is read from

Revision ID: 5d2c9e7b1a36
Revises: a9bb5fe916e8
Create Date: 2026-11-26 21:30:00
"""

from alembic import op

from services.kernel.answers import drop_trigger_sql, notify_trigger_sql

revision = "5d2c9e7b1a36"
down_revision = "a9bb5fe916e8"
branch_labels = None
depends_on = None

TABLES = ["listings"]  # GET /internal/resale-summary (the composed event page)


def upgrade() -> None:
    for statement in notify_trigger_sql("resale", TABLES):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_trigger_sql("resale", TABLES):
        op.execute(statement)
