"""a user's ban as auth last said it, with the sequence of the ban or unban that wrote it: a
banned seller cannot list (the row is share-locked by the listing, so a ban applied meanwhile
waits for it and then withdraws it), and an older ban applied again after an unban (a retry, a
replay's reprocess) withdraws nothing

Revision ID: d7a2c4e8f1b3
Revises: 7c3a9e5d1f20
Create Date: 2026-11-28 12:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d7a2c4e8f1b3"
down_revision = "7c3a9e5d1f20"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("banned", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        schema="resale",
    )
    op.add_column("users", sa.Column("state_seq", sa.BigInteger()), schema="resale")


def downgrade() -> None:
    op.drop_column("users", "state_seq", schema="resale")
    op.drop_column("users", "banned", schema="resale")
