"""the sequence of the event that wrote each group of a copy's columns (an event's status, a
user's names) and the newest name of each location, so that an older event applied later (a
retry, a replay's reprocess) changes nothing newer

Revision ID: d4a8f2c6e1b9
Revises: b81d4f0c6e25
Create Date: 2026-11-28 03:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d4a8f2c6e1b9"
down_revision = "b81d4f0c6e25"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("status_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        schema="ordering",
    )
    op.execute("UPDATE ordering.events SET status_seq = seq")
    op.create_table(
        "locations",
        sa.Column("location_id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        schema="ordering",
    )
    op.execute(
        "INSERT INTO ordering.locations (location_id, name, seq) "
        "SELECT DISTINCT ON (location_id) location_id, location_name, 0 FROM ordering.events "
        "ORDER BY location_id, seq DESC"
    )
    op.add_column("users", sa.Column("seq", sa.BigInteger()), schema="ordering")


def downgrade() -> None:
    op.drop_column("users", "seq", schema="ordering")
    op.drop_table("locations", schema="ordering")
    op.drop_column("events", "status_seq", schema="ordering")
