"""The gateway's own counts (`/metrics`) and its readiness probe (`/ready`), against plain
socket servers standing in for the services' `/ready`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from gateway.observe import Exposition, Readiness, Traffic
from services.kernel.upstream import Upstreams


def samples(traffic: Traffic) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = Exposition(traffic).render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_requests_are_counted_per_route_method_and_status_with_their_latency() -> None:
    traffic = Traffic(buckets=(0.01, 0.1), gauges=lambda: {"banned_users": 3})
    traffic.observe("catalog", "GET", 200, 0.005)
    traffic.observe("catalog", "GET", 200, 0.05)
    traffic.observe("catalog", "GET", 404, 0.5)
    traffic.observe("ordering", "BREW", 405, 0.001)  # a method nobody defined is "other"
    traffic.unavailable("resale")
    found = samples(traffic)

    def count(route: str, method: str, status: str) -> float:
        key = (("method", method), ("route", route), ("status", status))
        return found[("resellio_gateway_requests_total", key)]

    assert count("catalog", "GET", "200") == 2
    assert count("catalog", "GET", "404") == 1
    assert count("ordering", "other", "405") == 1

    def bucket(route: str, le: str) -> float:
        return found[("resellio_gateway_request_seconds_bucket", (("le", le), ("route", route)))]

    assert [bucket("catalog", le) for le in ("0.01", "0.1", "+Inf")] == [1, 2, 3]
    catalog = (("route", "catalog"),)
    assert found[("resellio_gateway_request_seconds_count", catalog)] == 3
    assert abs(found[("resellio_gateway_request_seconds_sum", catalog)] - 0.555) < 1e-9
    unavailable = ("resellio_gateway_upstream_unavailable_total", (("service", "resale"),))
    assert found[unavailable] == 1
    assert found[("resellio_gateway_banned_users", ())] == 3
    assert ("process_open_fds", ()) in found  # the process's own numbers come along


def _ready(status: int) -> Callable[[bytes], bytes]:
    reason = b"OK" if status == 200 else b"Service Unavailable"
    line = b"HTTP/1.1 %d %s\r\ncontent-length: 2\r\n\r\n{}" % (status, reason)
    return lambda _: line


async def test_a_service_is_ready_when_any_of_its_instances_is(serve: Callable) -> None:
    up, down_db = await serve(_ready(200)), await serve(_ready(503))
    closed = await serve(_ready(200))
    dead = closed.port
    assert closed.server is not None
    closed.server.close()
    await closed.server.wait_closed()
    url = "http://127.0.0.1:{}".format
    upstreams = Upstreams(
        {
            "auth": [url(dead), url(up.port)],  # one dead instance, one ready
            "catalog": [url(down_db.port)],  # answers, but not ready
            "resale": [url(dead)],  # nothing answers
        },
        connect_timeout_s=0.5,
        timeout_s=2,
    )
    loaded = False
    readiness = Readiness(upstreams, ["auth", "catalog", "resale"], lambda: loaded, every_s=0)
    try:
        assert await readiness.checks() == {
            "auth": "ok",
            "catalog": "not ready",
            "resale": "unreachable",
            "deny_list": "loading",
        }
        loaded = True
        assert (await readiness.checks())["deny_list"] == "ok"
    finally:
        upstreams.close()


async def test_probes_are_shared_and_remembered_for_a_moment(serve: Callable) -> None:
    server = await serve(_ready(200))
    upstreams = Upstreams(
        {"auth": [f"http://127.0.0.1:{server.port}"]}, connect_timeout_s=0.5, timeout_s=2
    )
    readiness = Readiness(upstreams, ["auth"], lambda: True, every_s=60)
    try:
        answers = await asyncio.gather(*(readiness.checks() for _ in range(20)))
        assert all(a == {"auth": "ok", "deny_list": "ok"} for a in answers)
        await readiness.checks()
        assert len(server.requests) == 1  # twenty-one asks, one probe
        assert server.requests[0].startswith(b"GET /ready HTTP/1.1")
    finally:
        upstreams.close()
