"""event categories stored before the API trimmed them: trimmed, their case-insensitive
duplicates dropped (the first spelling kept), as an event written today stores them. A
category with spaces around it could never be found by the `categories` filter, which trims
its terms. No event is published for it: no other service keeps an event's categories.

Revision ID: b8d4f0a6c2e3
Revises: e7c1b4f9a3d5
Create Date: 2026-11-28 11:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b8d4f0a6c2e3"
down_revision = "e7c1b4f9a3d5"
branch_labels = None
depends_on = None

# Every event with categories: whether one has spaces around it is decided by str.strip, as
# the API decides it (PostgreSQL's idea of a space depends on the database's locale).
_WITH_CATEGORIES = sa.text(
    "SELECT event_id, categories FROM catalog.events WHERE categories <> '{}'"
)
# Only if unchanged since read: an instance still serving may have just written them anew.
_SET = sa.text(
    "UPDATE catalog.events SET categories = :categories, categories_key = :key"
    " WHERE event_id = :event_id AND categories = :old"
)


def _trimmed(categories: list[str]) -> list[str]:
    """The rule of services/catalog/schemas.py at this revision (frozen here)."""
    seen: set[str] = set()
    kept = []
    for value in (c.strip() for c in categories):
        if value and value.lower() not in seen:
            seen.add(value.lower())
            kept.append(value)
    return kept


def upgrade() -> None:
    bind = op.get_bind()
    for event_id, categories in bind.execute(_WITH_CATEGORIES).all():
        trimmed = _trimmed(categories)
        if trimmed == categories:
            continue
        bind.execute(
            _SET.bindparams(
                sa.bindparam("categories", type_=sa.ARRAY(sa.Text)),
                sa.bindparam("key", type_=sa.ARRAY(sa.Text)),
                sa.bindparam("old", type_=sa.ARRAY(sa.Text)),
            ),
            {
                "event_id": event_id,
                "categories": trimmed,
                "key": [c.lower() for c in trimmed],
                "old": categories,
            },
        )


def downgrade() -> None:
    pass  # the spaces are not kept anywhere: nothing to put back
