"""After the sale: a transfer that ordering confirms late (202, then the final answer), and
the refund of a resale buyer when the event is cancelled (API.md §6.5, §10.3)."""

from __future__ import annotations

import httpx

from tests.support.actors import active_customer, admin_token
from tests.support.resale_actors import listed, my_tickets, purchase, resale_charges, resell
from tests.support.shop import db_rows, eventually
from tests.support.system import System


async def test_late_transfer_answers_202_then_the_same_key_gives_the_final_answer(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=45)
    another = await listed(api, admin, price=20)
    buyer = await active_customer(api, admin)
    reused = (409, {"detail": "Idempotency-Key reused with a different request"})
    system.stop_app("ordering")  # ListingSold waits in ordering's queue
    try:
        pending = await purchase(api, buyer, seller.ticket_id, key="late-1")
        assert pending.status_code == 202, pending.text
        # the key stays with its request: not another ticket, nor the same one otherwise asked
        for ticket_id, changed in (
            (another.ticket_id, {}),
            (seller.ticket_id, {"expected_price": 45}),
        ):
            other_request = await purchase(api, buyer, ticket_id, key="late-1", **changed)
            assert (other_request.status_code, other_request.json()) == reused
        body = pending.json()
        assert body["detail"] == "Purchase is being processed"
        status = await api.get(
            f"/api/resale/purchases/{body['purchase_id']}", headers=buyer.headers
        )
        assert status.json() == {
            "purchase_id": body["purchase_id"],
            "ticket_id": seller.ticket_id,
            "status": "processing",
        }
        # the sale stands meanwhile: nobody else can buy it
        other = await purchase(api, await active_customer(api, admin), seller.ticket_id)
        assert (other.status_code, other.json()) == (
            409,
            {"detail": "Ticket is no longer for sale"},
        )
    finally:
        system.start_app("ordering")
    final = await purchase(api, buyer, seller.ticket_id, key="late-1")
    assert final.status_code == 200, final.text
    assert final.json()["owner_id"] == buyer.user_id
    assert [t["ticket_id"] for t in await my_tickets(api, buyer)] == [seller.ticket_id]
    done = await api.get(f"/api/resale/purchases/{body['purchase_id']}", headers=buyer.headers)
    assert done.json()["status"] == "completed"
    again = await purchase(api, buyer, seller.ticket_id, key="late-1")
    assert (again.status_code, again.json()) == (200, final.json())  # now stored
    late_reuse = await purchase(api, buyer, another.ticket_id, key="late-1")
    assert (late_reuse.status_code, late_reuse.json()) == reused
    assert len(await resale_charges(system, seller.ticket_id)) == 1
    assert await resale_charges(system, another.ticket_id) == []  # never bought by the key


async def test_cancelled_event_refunds_the_resale_buyer_once(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=55)
    buyer = await active_customer(api, admin)
    assert (await purchase(api, buyer, seller.ticket_id)).status_code == 200
    cancelled = await api.delete(
        f"/api/events/{seller.event.event_id}", headers=seller.event.organizer.headers
    )
    assert cancelled.status_code == 200

    async def refunded() -> list[float]:
        return [
            float(c.refunded) for c in await resale_charges(system, seller.ticket_id) if c.refunded
        ]

    assert await eventually(refunded) == [55.0]
    events = await db_rows(
        system,
        "SELECT payload->>'buyer_id' AS buyer, payload->>'amount' AS amount FROM resale.outbox "
        "WHERE type = 'resale.ResaleRefunded' AND aggregate_id = :t",
        t=str(seller.ticket_id),
    )
    assert [(int(e.buyer), e.amount) for e in events] == [(buyer.user_id, "55.00")]


async def test_a_ticket_bought_back_refunds_its_holder_once_what_they_paid_last(
    api: httpx.AsyncClient, system: System
) -> None:
    """A buys at 50 and sells to B at 55, buys it back at 60, sells it to B again at 65 and buys
    it back at 70; the event is cancelled. The holder gets back what they paid for the ticket
    they hold, 70, once: not the 50 and the 60 of their earlier purchases, which B paid them
    back, and B (no longer a holder) nothing."""
    admin = await admin_token(api)
    first = await listed(api, admin, price=55)
    other = await active_customer(api, admin)
    for back_at, again_at in ((60, 65), (70, None)):
        assert (await purchase(api, other, first.ticket_id)).status_code == 200
        assert (await resell(api, other, first.ticket_id, back_at)).status_code == 200
        back = await purchase(api, first.account, first.ticket_id)
        assert back.status_code == 200 and back.json()["owner_id"] == first.account.user_id
        if again_at is not None:
            relisted = await resell(api, first.account, first.ticket_id, again_at)
            assert relisted.status_code == 200
    cancelled = await api.delete(
        f"/api/events/{first.event.event_id}", headers=first.event.organizer.headers
    )
    assert cancelled.status_code == 200

    async def voided() -> bool:
        rows = await db_rows(
            system, "SELECT status FROM ordering.tickets WHERE ticket_id = :t", t=first.ticket_id
        )
        return rows[0].status == "refunded"

    async def refunds() -> list[float] | None:
        amounts = [float(c.refunded) for c in await resale_charges(system, first.ticket_id)]
        return sorted(amounts) if any(amounts) else None

    assert await eventually(voided)
    assert await eventually(refunds) == [0.0, 0.0, 0.0, 70.0]  # of 55, 60, 65 and 70
    primary = await db_rows(
        system,
        "SELECT p.refunded FROM ordering.payments p JOIN ordering.tickets t"
        " ON p.authorize_key = 'order-' || t.order_id WHERE t.ticket_id = :t",
        t=first.ticket_id,
    )
    assert [float(p.refunded) for p in primary] == [0.0]
