"""the sequence of the event that wrote each group of a copy's columns (an event's fields and
status, a ticket type, a user's name) and the newest name of each location, so that an older
event applied later (a retry, a replay's reprocess) changes nothing newer

Revision ID: b5e9d3a7c2f4
Revises: f2b7c4d9a1e3
Create Date: 2026-11-28 03:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b5e9d3a7c2f4"
down_revision = "f2b7c4d9a1e3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("seq", sa.BigInteger()), schema="resale")
    op.add_column("events", sa.Column("status_seq", sa.BigInteger()), schema="resale")
    op.create_table(
        "locations",
        sa.Column("location_id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        schema="resale",
    )
    op.execute(
        "INSERT INTO resale.locations (location_id, name, seq) "
        "SELECT DISTINCT ON (location_id) location_id, location_name, 0 FROM resale.events "
        "ORDER BY location_id"
    )
    op.add_column("ticket_types", sa.Column("seq", sa.BigInteger()), schema="resale")
    op.add_column("users", sa.Column("seq", sa.BigInteger()), schema="resale")


def downgrade() -> None:
    op.drop_column("users", "seq", schema="resale")
    op.drop_column("ticket_types", "seq", schema="resale")
    op.drop_table("locations", schema="resale")
    op.drop_column("events", "status_seq", schema="resale")
    op.drop_column("events", "seq", schema="resale")
