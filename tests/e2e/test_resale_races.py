"""Real races through the gateway: a listing is sold at most once, and a buyer racing the
seller's withdrawal ends in one consistent state."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.actors import active_customer, admin_token
from tests.support.resale_actors import listed, my_tickets, purchase, resale_charges, withdraw
from tests.support.shop import db_rows
from tests.support.system import System


async def sale_records(
    system: System, ticket_id: int
) -> tuple[list[object], list[object], list[object]]:
    purchases = await db_rows(
        system,
        "SELECT purchase_id, buyer_id, status FROM resale.purchases WHERE ticket_id = :t",
        t=ticket_id,
    )
    payouts = await db_rows(
        system,
        "SELECT p.seller_id FROM resale.payouts p JOIN resale.purchases s USING (purchase_id) "
        "WHERE s.ticket_id = :t",
        t=ticket_id,
    )
    charges = [c for c in await resale_charges(system, ticket_id) if c.state == "captured"]
    return purchases, payouts, charges


async def test_twenty_buyers_one_listing_exactly_one_wins(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    seller = await listed(api, admin, price=90)
    buyers = await asyncio.gather(*(active_customer(api, admin) for _ in range(20)))
    answers = await asyncio.gather(*(purchase(api, b, seller.ticket_id) for b in buyers))

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 19, [a.text for a in answers]
    losers = [a.json() for a in answers if a.status_code == 409]
    assert all(body == {"detail": "Ticket is no longer for sale"} for body in losers)
    winner = next(b for b, a in zip(buyers, answers, strict=True) if a.status_code == 200)
    assert [t["ticket_id"] for t in await my_tickets(api, winner)] == [seller.ticket_id]
    for loser in buyers:
        if loser is not winner:
            assert await my_tickets(api, loser) == []
    purchases, payouts, charges = await sale_records(system, seller.ticket_id)
    assert [(p.buyer_id, p.status) for p in purchases] == [(winner.user_id, "completed")]
    assert [p.seller_id for p in payouts] == [seller.account.user_id]  # paid once
    assert len(charges) == 1  # charged once


async def test_buyer_and_seller_withdrawing_at_once_end_consistent(
    api: httpx.AsyncClient, system: System
) -> None:
    admin = await admin_token(api)
    outcomes = set()
    for _ in range(4):
        seller = await listed(api, admin, price=40)
        buyer = await active_customer(api, admin)
        bought, withdrawn = await asyncio.gather(
            purchase(api, buyer, seller.ticket_id), withdraw(api, seller.account, seller.ticket_id)
        )
        purchases, payouts, charges = await sale_records(system, seller.ticket_id)
        buyer_has = await my_tickets(api, buyer)
        seller_has = await my_tickets(api, seller.account)
        if bought.status_code == 200:
            # sold: the seller's withdrawal was refused, the buyer holds it, one charge
            assert withdrawn.status_code in (409, 403), withdrawn.text
            assert withdrawn.json()["detail"] in (
                "Ticket is being purchased",
                "Not the ticket owner",
            )
            assert [t["ticket_id"] for t in buyer_has] == [seller.ticket_id] and seller_has == []
            assert len(purchases) == len(payouts) == len(charges) == 1
            outcomes.add("sold")
        else:
            # withdrawn: nobody charged, the seller keeps the ticket
            assert withdrawn.status_code == 200, withdrawn.text
            assert (bought.status_code, bought.json()) == (
                400,
                {"detail": "Ticket is not for resale"},
            )
            assert buyer_has == [] and [t["ticket_id"] for t in seller_has] == [seller.ticket_id]
            assert payouts == [] and charges == []
            outcomes.add("withdrawn")
    assert outcomes  # each round ended in exactly one of the two consistent states
