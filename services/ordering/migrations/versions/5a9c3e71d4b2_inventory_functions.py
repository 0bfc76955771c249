"""inventory moves as functions, sent with the COMMIT in one message

A claim or a sale locks its ticket type's inventory row, which every buyer of the type
needs. Sent as the last statement of a transaction in the same message as its COMMIT
(`UnitOfWork.commit(last=...)`), the lock is held only while the server commits, never
across a round trip to a busy service. The simple query protocol that allows this returns
no rows, so a move the capacity does not allow raises instead (SQLSTATE P0002).

Revision ID: 5a9c3e71d4b2
Revises: 3e5b7a10c2d8
Create Date: 2026-11-26 10:40:00
"""

from alembic import op

revision = "5a9c3e71d4b2"
down_revision = "3e5b7a10c2d8"
branch_labels = None
depends_on = None

_REFUSE = (
    "IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'no_data_found', "
    "MESSAGE = 'not enough tickets', DETAIL = p_type::text; END IF;"
)


def upgrade() -> None:
    # Hold `p_quantity` more tickets of a type, if it is on offer and the capacity allows.
    op.execute(
        "CREATE FUNCTION ordering.hold_tickets(p_type bigint, p_quantity integer) RETURNS void "
        "LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE ordering.ticket_types SET held = held + p_quantity "
        "WHERE type_id = p_type AND NOT deleted AND sold + held + p_quantity <= max_count; "
        f"{_REFUSE} END $$"
    )
    # Held tickets become sold, unless the capacity was lowered below what is already sold
    # plus these.
    op.execute(
        "CREATE FUNCTION ordering.sell_held(p_type bigint, p_quantity integer) RETURNS void "
        "LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE ordering.ticket_types SET held = held - p_quantity, sold = sold + p_quantity "
        "WHERE type_id = p_type AND sold + p_quantity <= max_count; "
        f"{_REFUSE} END $$"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION ordering.sell_held(bigint, integer)")
    op.execute("DROP FUNCTION ordering.hold_tickets(bigint, integer)")
