"""A slow (frozen) or dead downstream service: the gateway answers within its timeout with a
JSON 503, or the composed event page with the missing part null, and does not pile up
connections (its open file descriptors stay bounded)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx

from tests.faults.conftest import GATEWAY_TIMEOUT_S, PART_TIMEOUT_S, Rig
from tests.faults.workload import market
from tests.support.invariants import check_invariants

BURST = 40


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _timed(request: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request  # type: ignore[misc]
    return response, time.monotonic() - started


async def settled_fds(pid: int, baseline: int) -> int:
    """The gateway's open descriptors once it has closed what it no longer needs (bounded)."""
    for _ in range(75):  # up to 15 s
        if open_fds(pid) <= baseline + 5:
            break
        await asyncio.sleep(0.2)
    return open_fds(pid)


async def burst(url: str, path: str) -> list[tuple[httpx.Response, float]]:
    """BURST concurrent requests on their own connections, closed before returning."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(_timed(client.get(path)) for _ in range(BURST)))


async def _ready_when(gw: httpx.AsyncClient, status: int) -> dict[str, str]:
    """The gateway's /ready checks once it answers `status` (it probes at most once a second)."""
    for _ in range(100):
        answer = await gw.get("/ready")
        if answer.status_code == status:
            return answer.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"/ready never answered {status}: {answer.text}")


async def test_frozen_then_dead_resale(rig: Rig, gw: httpx.AsyncClient) -> None:
    system = rig.system
    shop = await market(gw, buyers=1)
    page = f"/api/events/{shop.event.event_id}"
    gateway = system.processes["gateway"].pid
    baseline = open_fds(gateway)
    resale = system.processes["resale"]

    resale.send_signal(signal.SIGSTOP)  # slow: connections accepted, nothing answered
    try:
        composed, took_page = await _timed(gw.get(page))
        sampled: list[int] = []

        async def sample() -> None:
            while True:
                sampled.append(open_fds(gateway))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        answers = await burst(system.gateway_url, "/api/resale/marketplace")
        sampler.cancel()
    finally:
        resale.send_signal(signal.SIGCONT)

    assert composed.status_code == 200, composed.text
    assert composed.json()["resale"] is None and took_page < PART_TIMEOUT_S + 3, (
        composed.json(),
        took_page,
    )
    for response, took in answers:
        assert response.status_code == 503 and response.json() == {
            "detail": "Service unavailable"
        }, response.text
        assert took < GATEWAY_TIMEOUT_S + 5, took
    # While frozen: at most the client's socket and one upstream socket per waiting request;
    # none left behind afterwards.
    peak = max(sampled)
    assert peak <= baseline + 2 * BURST + 10, (baseline, peak)

    after_frozen = await settled_fds(gateway, baseline)
    assert after_frozen <= baseline + 5, (baseline, after_frozen)

    # Dead: refused at once.
    await asyncio.to_thread(system.stop_app, "resale", signal.SIGKILL)
    try:
        dead = await burst(system.gateway_url, "/api/resale/marketplace")
        page_dead, took_dead_page = await _timed(gw.get(page))
        after_dead = await settled_fds(gateway, baseline)
        ready_dead = await _ready_when(gw, 503)
        unavailable = await gw.get("/metrics")
    finally:
        await asyncio.to_thread(system.start_app, "resale")
    # The gateway's own /ready says which service is away, and its metrics count the 503s.
    assert ready_dead == {
        "auth": "ok",
        "catalog": "ok",
        "ordering": "ok",
        "resale": "unreachable",
        "deny_list": "ok",
    }
    assert re.search(
        r'^resellio_gateway_upstream_unavailable_total\{service="resale"\} (\d+)',
        unavailable.text,
        re.MULTILINE,
    ), unavailable.text
    assert await _ready_when(gw, 200) == {**ready_dead, "resale": "ok"}
    for response, took in dead:
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": "Service unavailable"} and took < 5, took
    assert page_dead.status_code == 200 and page_dead.json()["resale"] is None
    assert took_dead_page < PART_TIMEOUT_S + 3
    assert after_dead <= baseline + 5, (baseline, after_dead)
    back = await gw.get("/api/resale/marketplace")
    assert back.status_code == 200, back.text

    report = await check_invariants(system)
    print(
        f"\ninjected: resale frozen (SIGSTOP) under {BURST} requests -> 503 within "
        f"{max(t for _, t in answers):.1f}s, page part null in {took_page:.1f}s, gateway fds "
        f"{baseline} -> peak {peak} -> {after_frozen}; resale killed -> 503 within "
        f"{max(t for _, t in dead):.2f}s, fds {after_dead}; invariants: {report}"
    )
