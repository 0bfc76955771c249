"""notify changes of the tables public answers are built from

Revision ID: 7c1f0d2a9e41
Revises: 564575d709b8
Create Date: 2026-11-26 03:00:00
"""

from alembic import op

from services.kernel.answers import drop_trigger_sql, notify_trigger_sql

revision = "7c1f0d2a9e41"
down_revision = "564575d709b8"
branch_labels = None
depends_on = None

# What the listing, the event page, the ticket-type list and the locations are built from.
TABLES = ["events", "ticket_types", "locations"]


def upgrade() -> None:
    for statement in notify_trigger_sql("catalog", TABLES):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_trigger_sql("catalog", TABLES):
        op.execute(statement)
