"""PostgreSQL unreachable for a few seconds: every service answers 503 "Service unavailable"
fast (no 500, no hang), then serves again by itself once the database is back."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.faults.conftest import Rig
from tests.faults.workload import Outcomes, checkout_once, market
from tests.support.actors import login
from tests.support.invariants import check_invariants
from tests.support.shop import eventually

FAST_S = 8.0  # connect timeout (5 s) plus slack on a loaded machine


async def test_database_outage_fails_fast_with_503_then_recovers(
    rig: Rig, gw: httpx.AsyncClient
) -> None:
    shop = await market(gw, buyers=2)
    buyer = shop.buyers[0]
    # One request per service that must touch its database.
    probes = {
        "auth": lambda: login(gw, buyer.email, buyer.password),
        "catalog": lambda: gw.get("/api/events", params={"search": "fault"}),
        "ordering": lambda: gw.get("/api/tickets", headers=buyer.headers),
        "ordering checkout": lambda: gw.post("/api/cart/checkout", headers=buyer.headers),
        "resale": lambda: gw.get("/api/resale/marketplace"),
    }
    await asyncio.to_thread(rig.database.cut)
    answers: dict[str, tuple[int, object, float]] = {}
    try:
        for name, probe in probes.items():
            started = time.monotonic()
            response = await probe()
            answers[name] = (response.status_code, response.json(), time.monotonic() - started)
    finally:
        await asyncio.to_thread(rig.database.restore)

    for name, (status, body, took) in answers.items():
        assert (status, body) == (503, {"detail": "Service unavailable"}), (name, status, body)
        assert took < FAST_S, (name, took)

    # Back by itself: the same requests succeed without restarting anything.
    async def serving() -> bool:
        answers = [await probe() for name, probe in probes.items() if name != "ordering checkout"]
        return all(a.status_code == 200 for a in answers)

    assert await eventually(serving, timeout=60)
    out = Outcomes()
    response = await checkout_once(gw, shop.buyers[1], shop.event.type_id, out)
    assert response is not None and response.status_code == 200, out

    report = await check_invariants(rig.system)
    slowest = max(took for _, _, took in answers.values())
    print(
        f"\ninjected: PostgreSQL cut during {len(probes)} requests (all 503 within "
        f"{slowest:.1f}s), restored; invariants: {report}"
    )
