"""Real races through the gateway: a listing is sold at most once, and a buyer racing the
seller's withdrawal ends in one consistent state."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.actors import Account, active_customer, admin_token
from tests.support.resale_actors import (
    Holder,
    listed,
    my_tickets,
    purchase,
    resale_charges,
    resell,
    withdraw,
)
from tests.support.shop import db_rows, holding, waiting_for_lock
from tests.support.system import System

BEING_PURCHASED = (409, {"detail": "Ticket is being purchased"})


async def sale_records(system: System, ticket_id: int) -> tuple[list[object], ...]:
    """The ticket's resale purchases (buyer, status), payouts (seller, gross) and charges
    (state, amount, refunded)."""
    purchases = await db_rows(
        system,
        "SELECT buyer_id, status FROM resale.purchases WHERE ticket_id = :t",
        t=ticket_id,
    )
    payouts = await db_rows(
        system,
        "SELECT p.seller_id, p.gross FROM resale.payouts p JOIN resale.purchases s"
        " USING (purchase_id) WHERE s.ticket_id = :t",
        t=ticket_id,
    )
    charges = await resale_charges(system, ticket_id)
    return (
        [(p.buyer_id, p.status) for p in purchases],
        [(p.seller_id, p.gross) for p in payouts],
        [(c.state, c.amount, c.refunded) for c in charges],
    )


async def sold_once(
    api: httpx.AsyncClient, system: System, seller: Holder, buyer: Account, price: int
) -> None:
    """The buyer holds the ticket, the seller no longer; one completed purchase, one charge of
    the price (kept), and the seller paid that price once."""
    assert [t["ticket_id"] for t in await my_tickets(api, buyer)] == [seller.ticket_id]
    assert await my_tickets(api, seller.account) == []
    assert await sale_records(system, seller.ticket_id) == (
        [(buyer.user_id, "completed")],
        [(seller.account.user_id, price)],
        [("captured", price, 0)],
    )


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
    await sold_once(api, system, seller, winner, 90)
    for loser in buyers:
        if loser is not winner:
            assert await my_tickets(api, loser) == []


async def test_a_withdrawal_while_the_buyers_charge_runs_is_refused_and_the_sale_stands(
    api: httpx.AsyncClient, system: System
) -> None:
    """§9.5, §10.3: a listing a buyer has claimed cannot be withdrawn. The buyer's charge is
    held at the processor (its ledger locked) until the seller's withdrawal has answered: 409
    "Ticket is being purchased", and the listing is still the buyer's; once the charge goes
    through the buyer holds the ticket, charged once, the seller paid once."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=40)
    buyer = await active_customer(api, admin)
    async with holding(system, "LOCK TABLE resale.payments IN EXCLUSIVE MODE"):
        buying = asyncio.create_task(purchase(api, buyer, seller.ticket_id))
        await waiting_for_lock(system, '%INSERT INTO "resale".payments%', buying)
        withdrawn = await withdraw(api, seller.account, seller.ticket_id)
        assert (withdrawn.status_code, withdrawn.json()) == BEING_PURCHASED
    bought = await buying
    assert bought.status_code == 200, bought.text
    assert bought.json()["owner_id"] == buyer.user_id
    await sold_once(api, system, seller, buyer, 40)


async def test_buyer_and_seller_withdrawing_at_once_end_consistent(
    api: httpx.AsyncClient, system: System
) -> None:
    """Unsteered rounds of the same race: whichever comes first, the round ends sold (the
    withdrawal refused while the sale runs, or not the seller's ticket once it has moved) or
    withdrawn (the purchase finds nothing for sale, nobody charged)."""
    admin = await admin_token(api)
    for _ in range(4):
        seller = await listed(api, admin, price=40)
        buyer = await active_customer(api, admin)
        bought, withdrawn = await asyncio.gather(
            purchase(api, buyer, seller.ticket_id), withdraw(api, seller.account, seller.ticket_id)
        )
        if bought.status_code == 200:
            assert (withdrawn.status_code, withdrawn.json()) in (
                BEING_PURCHASED,
                (403, {"detail": "Not the ticket owner"}),
            )
            await sold_once(api, system, seller, buyer, 40)
        else:
            assert withdrawn.status_code == 200, withdrawn.text
            assert (bought.status_code, bought.json()) == (
                400,
                {"detail": "Ticket is not for resale"},
            )
            assert await my_tickets(api, buyer) == []
            assert [t["ticket_id"] for t in await my_tickets(api, seller.account)] == [
                seller.ticket_id
            ]
            assert await sale_records(system, seller.ticket_id) == ([], [], [])


async def test_the_sellers_concurrent_changes_each_answer_what_they_did(
    api: httpx.AsyncClient,
) -> None:
    """A reprice, a re-listing and a withdrawal of one ticket at once: each 200 shows the
    ticket as that request left it (the answer was read after the commit, and another one's
    change showed: a withdrawal answered with a price, a reprice with none)."""
    admin = await admin_token(api)
    seller = await listed(api, admin, price=60)
    account, tid = seller.account, seller.ticket_id
    for round_ in range(8):
        prices = [61 + round_, 70 + round_]
        answers = await asyncio.gather(
            *(resell(api, account, tid, price) for price in prices),
            withdraw(api, account, tid),
            withdraw(api, account, tid),
        )
        for price, answer in zip(prices, answers[:2], strict=True):
            assert answer.status_code == 200, answer.text
            assert answer.json()["resell_price"] == price
        for answer in answers[2:]:
            if answer.status_code == 200:
                assert answer.json()["resell_price"] is None, answer.text
            else:
                assert answer.json() == {"detail": "Ticket is not listed for resale"}, answer.text
