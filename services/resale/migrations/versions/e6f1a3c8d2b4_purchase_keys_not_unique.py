"""a purchase's Idempotency-Key is no longer unique per buyer: a key freed by an answer that is
not kept (a 503, API.md §1.6) or expired after 24 h starts a new purchase under it

Revision ID: e6f1a3c8d2b4
Revises: c4e8a1f27b90
Create Date: 2026-11-28 00:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "e6f1a3c8d2b4"
down_revision = "c4e8a1f27b90"
branch_labels = None
depends_on = None


def _index(columns: list[str], unique: bool) -> None:
    op.drop_index("purchases_by_buyer_key", table_name="purchases", schema="resale")
    op.create_index(
        "purchases_by_buyer_key",
        "purchases",
        columns,
        unique=unique,
        schema="resale",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def upgrade() -> None:
    _index(["buyer_id", "idempotency_key", "purchase_id"], unique=False)


def downgrade() -> None:
    # Only the newest purchase of each key can keep it under a unique index again.
    op.execute(
        "UPDATE resale.purchases p SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM resale.purchases q WHERE q.buyer_id = p.buyer_id"
        " AND q.idempotency_key = p.idempotency_key AND q.purchase_id > p.purchase_id)"
    )
    _index(["buyer_id", "idempotency_key"], unique=True)
