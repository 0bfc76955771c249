"""What operators read off the gateway: `/ready` (can every service be reached) and Prometheus
`/metrics` (what it answered, how fast, and which services it could not reach).

The gateway is the hot loop, so a request is counted in plain Python (two dict updates and a
bisect) and turned into Prometheus families only when scraped."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from services.kernel.metrics import LATENCY_BUCKETS
from services.kernel.upstream import Upstreams

# Route labels: the service a path belongs to, or the gateway's own answers.
EVENT_PAGE = "event_page"  # GET /api/events/{id}, composed from three services
OWN = "gateway"  # /, /health, /ready, /metrics, /docs
UNROUTED = "unrouted"  # 404s for paths no service owns
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Traffic(Collector):
    """Requests per route, method and status, and their latency per route."""

    def __init__(
        self,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        gauges: Callable[[], dict[str, float]] = dict,
    ) -> None:
        """`gauges`: read when scraped, each as resellio_gateway_<name>."""
        self.buckets = tuple(buckets)
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per route: one count per bucket (+Inf last), then the sum of seconds.
        self._latency: dict[str, list[float]] = {}
        self._unavailable: dict[str, int] = {}
        self.gauges = gauges

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in _METHODS else "other", status)
        self._counts[key] = self._counts.get(key, 0) + 1
        found = self._latency.get(route)
        if found is None:
            found = self._latency[route] = [0.0] * (len(self.buckets) + 2)
        found[bisect_left(self.buckets, seconds)] += 1
        found[-1] += seconds

    def unavailable(self, service: str) -> None:
        """A request the gateway answered 503 because `service` could not be reached."""
        self._unavailable[service] = self._unavailable.get(service, 0) + 1

    def collect(self) -> Iterator[Any]:
        yield _counter(
            "resellio_gateway_requests",
            "Requests the gateway answered",
            ["route", "method", "status"],
            {
                (route, method, str(status)): n
                for (route, method, status), n in self._counts.items()
            },
        )
        latency = HistogramMetricFamily(
            "resellio_gateway_request_seconds",
            "Time from a request's arrival to the end of its answer",
            labels=["route"],
        )
        for route, counts in sorted(self._latency.items()):
            cumulative, running = [], 0.0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=False):
                running += n
                cumulative.append((floatToGoString(bound), running))  # "1.0", "+Inf"
            latency.add_metric([route], cumulative, counts[-1])
        yield latency
        yield _counter(
            "resellio_gateway_upstream_unavailable",
            "Requests answered 503 because their service could not be reached",
            ["service"],
            {(service,): n for service, n in self._unavailable.items()},
        )
        for name, value in self.gauges().items():
            yield GaugeMetricFamily(f"resellio_gateway_{name}", name.replace("_", " "), value)


def _counter(
    name: str, documentation: str, labels: list[str], counts: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, n in sorted(counts.items()):
        family.add_metric(list(values), n)
    return family


class Exposition:
    """The gateway's `/metrics` page: its traffic and its process (CPU, memory, open files)."""

    def __init__(self, traffic: Traffic) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(traffic)
        ProcessCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Readiness:
    """Whether every service has an instance whose own `/ready` says yes, and whether the
    deny-list has been loaded. Probes run at most once per `every_s` (concurrent asks share
    one), each instance with a short timeout."""

    def __init__(
        self,
        upstreams: Upstreams,
        services: Sequence[str],
        denylist_loaded: Callable[[], bool],
        timeout_s: float = 1.0,
        every_s: float = 1.0,
    ) -> None:
        self.upstreams = upstreams
        self.services = tuple(services)
        self.denylist_loaded = denylist_loaded
        self.timeout_s = timeout_s
        self.every_s = every_s
        self._last: tuple[float, dict[str, str]] | None = None
        self._probing: asyncio.Task[dict[str, str]] | None = None

    async def checks(self) -> dict[str, str]:
        if self._last is not None and time.monotonic() - self._last[0] < self.every_s:
            return self._last[1]
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe())
            self._probing.add_done_callback(self._forget)
        return await asyncio.shield(self._probing)

    def _forget(self, task: asyncio.Task[dict[str, str]]) -> None:
        self._probing = None
        if not task.cancelled() and task.exception() is None:
            self._last = (time.monotonic(), task.result())

    async def _probe(self) -> dict[str, str]:
        states = await asyncio.gather(*(self._service(s) for s in self.services))
        checks = dict(zip(self.services, states, strict=True))
        checks["deny_list"] = "ok" if self.denylist_loaded() else "loading"
        return checks

    async def _service(self, service: str) -> str:
        """'ok' when any instance is ready, 'not ready' when one answered otherwise, else
        'unreachable'."""
        outcomes = await asyncio.gather(
            *(self._instance(service, i) for i in range(self.upstreams.count(service)))
        )
        if "ok" in outcomes:
            return "ok"
        return "not ready" if "not ready" in outcomes else "unreachable"

    async def _instance(self, service: str, index: int) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.upstreams.send(
                    service, "GET", b"/ready", timeout_s=self.timeout_s, instance=index
                )
        except Exception:  # refused, reset, timed out: nothing answered
            return "unreachable"
        return "ok" if answer.status == 200 else "not ready"
