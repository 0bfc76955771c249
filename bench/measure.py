"""Load generators: wrk for plain GETs, an async client (in a separate process) otherwise."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, concurrency: int, seconds: int, headers: dict[str, str] | None = None) -> Result:
    cmd = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(HERE / "wrk_report.lua")]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return Result(data["requests"], data["seconds"], data["errors"], data["p50_ms"], data["p99_ms"])


async def run_async(
    work: Callable[[httpx.AsyncClient, int], Awaitable[bool]],
    concurrency: int,
    seconds: float,
    base_url: str,
    max_iterations: int | None = None,
) -> Result:
    """Call `work(client, i)` from `concurrency` workers for `seconds` (or `max_iterations`)."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors, counter
            while time.monotonic() < deadline:
                if max_iterations is not None and counter >= max_iterations:
                    return
                i = counter
                counter += 1
                started = time.perf_counter()
                try:
                    ok = await work(client, i)
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += 0 if ok else 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return Result(len(latencies), elapsed, errors, percentile(latencies, 50), percentile(latencies, 99))


def get_loop(url: str, concurrency: int, seconds: int, headers: dict[str, str] | None = None) -> Result:
    """GET load from a separate process: wrk when installed, else the async client."""
    if have_wrk():
        return wrk(url, concurrency, seconds, headers)
    cmd = [sys.executable, "-m", "bench.getload", url, str(concurrency), str(seconds), json.dumps(headers or {})]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return Result(**json.loads(out.strip().splitlines()[-1]))


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
