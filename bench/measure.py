"""Load generators: wrk for plain GETs, an async client (in a separate process) otherwise."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.client import Client, ClientError

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


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat; (0, 0) where
    there is none. Busy is everything but idle and I/O wait: every process of the system under
    test, the database, the broker and the load generator alike."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:8]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


# Server processes that are not the system's own children, by what their command line starts
# with (PostgreSQL's backends retitle themselves "postgres: ...").
SERVERS = {"postgres": "postgresql", "/usr/lib/postgresql/": "postgresql"}
ERLANG_VM = "beam.smp"


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return None
    if command.endswith(ERLANG_VM):
        return "rabbitmq"
    return next((name for prefix, name in SERVERS.items() if command.startswith(prefix)), None)


def process_cpu(named: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far by each part of the machine: the processes in `named` under
    their names (an instance's "name#1" counts as "name"), PostgreSQL's and RabbitMQ's
    processes found by their command lines (every backend, whenever it started), and
    "other" for the rest of the machine's busy time. Differences of two readings tell what a
    stretch of work cost each part; a process that exits in between is not counted."""
    parts: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        name = named.get(pid)
        part = name.split("#")[0] if name is not None else _server_of(pid)
        if part is not None:
            parts[part] = parts.get(part, 0.0) + _cpu_of(pid)
    parts["other"] = machine_cpu()[0] - sum(parts.values())
    return parts


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _wrk_command(
    url: str, concurrency: int, seconds: int, headers: dict[str, str] | None, varied: bool
) -> list[str]:
    script = "wrk_paths.lua" if varied else "wrk_report.lua"
    cmd = [
        "wrk",
        f"-t{min(2, concurrency)}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / script),
    ]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, url]


def _wrk_result(out: str) -> Result:
    data = json.loads(out.strip().splitlines()[-1])
    return Result(data["requests"], data["seconds"], data["errors"], data["p50_ms"], data["p99_ms"])


async def run_async(
    work: Callable[[Client, int], Awaitable[bool]],
    concurrency: int,
    seconds: float,
    base_url: str | list[str],
    max_iterations: int | None = None,
) -> Result:
    """Call `work(client, i)` from `concurrency` workers for `seconds` (or `max_iterations`).
    With several base URLs (one per gateway instance) the calls go round-robin over them."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + seconds
    urls = [base_url] if isinstance(base_url, str) else base_url
    per_url = max(1, concurrency // len(urls))
    clients = [Client(u, max_connections=per_url) for u in urls]
    try:

        async def worker() -> None:
            nonlocal errors, counter
            while time.monotonic() < deadline:
                if max_iterations is not None and counter >= max_iterations:
                    return
                i = counter
                counter += 1
                started = time.perf_counter()
                try:
                    ok = await work(clients[i % len(clients)], i)
                except ClientError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += 0 if ok else 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            await client.aclose()
    return Result(
        len(latencies), elapsed, errors, percentile(latencies, 50), percentile(latencies, 99)
    )


def get_loop(
    url: str | list[str],
    concurrency: int,
    seconds: int,
    headers: dict[str, str] | None = None,
    paths: list[str] | None = None,
) -> Result:
    """GET load from separate processes: wrk when installed, else the async client. With
    several URLs (one per gateway instance) one load process per URL runs at the same time,
    each with its share of the connections; their p50/p99 are combined as the worst of them.
    With `paths`, each request takes the next of them (the URLs are then base URLs)."""
    urls = [url] if isinstance(url, str) else url
    share = max(1, concurrency // len(urls))
    env = dict(os.environ)
    if paths:
        listing = tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False)
        listing.write("\n".join(paths) + "\n")
        listing.close()
        env.update(WRK_PATHS=listing.name, WRK_REPORT=str(HERE / "wrk_report.lua"))
    if have_wrk():
        cmds = [_wrk_command(u, share, seconds, headers, bool(paths)) for u in urls]
        parse = _wrk_result
    else:
        if paths:  # the async client requests one path: install wrk for the varied run
            urls = [u + paths[0] for u in urls]
        cmds = [
            [
                sys.executable,
                "-m",
                "bench.getload",
                u,
                str(share),
                str(seconds),
                json.dumps(headers or {}),
            ]
            for u in urls
        ]

        def parse(out: str) -> Result:
            return Result(**json.loads(out.strip().splitlines()[-1]))

    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True, env=env) for c in cmds]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {proc.args}")
        results.append(parse(out))
    return Result(
        sum(r.requests for r in results),
        max(r.seconds for r in results),
        sum(r.errors for r in results),
        max(r.p50_ms for r in results),
        max(r.p99_ms for r in results),
    )


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
