"""`make bench`: starts its own system, loads a dataset, runs each scenario for a bounded time,
stops everything, writes bench/results/latest.{json,md} and prints the table.

Exits non-zero when a correctness check fails (oversell, double sale, lost event)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.dataset import PASSWORD, load
from bench.measure import get_loop, have_wrk
from bench.scenarios import CorrectnessError, Row
from services.cli import APPS
from services.kernel.db import create_engine
from tests.support.system import System

RESULTS = Path(__file__).resolve().parent / "results"
BENCH_ENV = {
    "RATE_LIMITS": "off",
    "LOG_LEVEL": "WARNING",
    "MAX_TICKETS_PER_CUSTOMER_PER_EVENT": "1000",
}


# What the drop's CPU rows call a process of the system, where its name alone would not say.
PART = {"mail": "mail catcher"}

LOCAL_SOCKET_URL = "postgresql+asyncpg://postgres@/resellio?host=/var/run/postgresql"


def choose_database() -> str:
    """The benchmark's PostgreSQL: RESELLIO_DATABASE_URL when set; else this machine's Unix
    socket when it answers (every process of the run is on this machine, as in a deployment
    beside its database; measured: about 4 % less CPU per purchase than TCP on loopback);
    else the TCP default. Its transport is printed with the results."""
    if not os.environ.get("RESELLIO_DATABASE_URL"):
        import asyncpg

        async def answers() -> bool:
            try:
                conn = await asyncpg.connect(
                    LOCAL_SOCKET_URL.replace("+asyncpg", "").replace("/resellio", "/postgres"),
                    timeout=3,
                )
            except Exception:  # no socket, refused, or not this machine's PostgreSQL
                return False
            await conn.close()
            return True

        if asyncio.run(answers()):
            os.environ["RESELLIO_DATABASE_URL"] = LOCAL_SOCKET_URL
    url = os.environ.get("RESELLIO_DATABASE_URL", "")
    return "unix socket" if "host=/" in url else "tcp"


def ensure_wrk() -> None:
    if have_wrk() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True, check=False)


def table(rows: list[Row]) -> str:
    lines = ["| scenario | metric | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.scenario} | {r.metric} | {r.value:g} {r.unit} | {r.target} | {met} |")
    return "\n".join(lines)


async def run_suite(args: argparse.Namespace, instances: int, rows: list[Row]) -> None:
    """One system with `instances` of every app; appends its rows as they are measured (so a
    correctness failure still leaves what was measured before it)."""
    extra = dict(BENCH_ENV)
    # PostgreSQL allows 100 connections: the instances share them.
    extra["RESELLIO_DB_POOL_SIZE"] = str(max(4, 10 // instances))
    system = System(
        extra_env=extra, instances={name: instances for name in APPS} if instances > 1 else None
    )
    suffix = f" [{instances} instances]" if instances > 1 else ""
    first = len(rows)
    await asyncio.to_thread(system.start)
    engine = create_engine(system.database_url, pool_size=2)
    gateways = [f"http://127.0.0.1:{port}" for _, port in system.instances("gateway")]
    try:
        t0 = time.monotonic()
        data = await load(system.gateway_url, args.events, args.customers)
        print(f"dataset loaded in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        await settle_noted(engine, "the dataset's loading")
        base_rows, base = scenarios.baseline(gateways, args.seconds)
        rows += base_rows

        def drop(concurrency: int) -> Awaitable[list[Row]]:
            return scenarios.ticket_drop(
                gateways,
                data,
                args.capacity,
                engine,
                {p.pid: PART.get(name, name) for name, p in system.processes.items()},
                max(1, args.drops),
                concurrency,
            )

        wanted = set(args.scenarios.split(","))
        steps: list[tuple[str, bool, Callable[[], Awaitable[list[Row]]]]] = [
            (
                "browse",
                True,
                lambda: asyncio.to_thread(scenarios.browse, gateways, data, args.seconds, base),
            ),
            (
                "gateway",
                instances == 1,
                lambda: asyncio.to_thread(
                    scenarios.gateway_cost, system.gateway_url, system.url("catalog"), args.seconds
                ),
            ),
            ("drop", True, lambda: drop(64)),
            ("crowd", True, lambda: drop(256)),  # the same drop, four times the buyers at once
            (
                "marketplace",
                True,
                lambda: scenarios.marketplace(
                    gateways, data, args.market_listings, args.seconds, base, engine
                ),
            ),
            (
                "resale",
                True,
                lambda: scenarios.resale_rush(gateways, data, args.listings, args.buyers, engine),
            ),
            *(
                (
                    "pipeline",
                    True,
                    lambda rate=int(rate): scenarios.event_pipeline(
                        gateways, data, engine, rate, args.seconds
                    ),
                )
                for rate in args.pipeline_rate.split(",")
            ),
            ("replay", instances == 1, lambda: replay_rows(system)),
            ("replay", instances == 1, lambda: repair_replay_rows(system, engine)),
            ("login", instances == 1, lambda: login_rows(system, args)),
        ]
        for name, applies, step in steps:
            if name in wanted and applies:
                await settle_noted(engine, "the last scenario")
                t0 = time.monotonic()
                rows += await step()
                print(f"{name}: {time.monotonic() - t0:.0f}s", file=sys.stderr)
    finally:
        for row in rows[first:]:
            row.scenario += suffix
        await engine.dispose()
        await asyncio.to_thread(system.stop)


async def settle_noted(engine: Any, after: str) -> None:
    waited = await scenarios.settle(engine)
    if waited > 1:
        print(f"waited {waited:.0f}s for the system to finish {after}", file=sys.stderr)


async def replay_rows(system: System) -> list[Row]:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "projections", "rebuild", "resale"],
        env=system.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise CorrectnessError(f"projection rebuild differs or failed:\n{out.stdout}\n{out.stderr}")
    # "replayed N events in S s (R events/s)"
    line = next(line for line in out.stdout.splitlines() if line.startswith("replayed"))
    count = int(line.split()[1])
    rate = float(line.split("(")[1].split()[0].replace(",", ""))
    name = "replay: rebuild resale projections"
    return [
        Row(name, "events replayed", count, "count"),
        Row(name, "events/s", rate, "/s", ">= 5000", rate >= 5000),
        Row(name, "rebuilt state equals previous", 1, "", "yes", True),
    ]


async def repair_replay_rows(system: System, engine: Any) -> list[Row]:
    """An operator's repair: every TicketPurchased replayed into resale with --reprocess (as
    after a handler fix). Timed from the first read of the log to the last event applied."""
    from sqlalchemy import text

    from services.kernel import broker
    from services.kernel.eventlog import Filters
    from services.kernel.replay import replay

    # Each reprocessed event counts one more handling on its inbox row.
    handled = text(
        "SELECT coalesce(sum(handled_count), 0) FROM resale.inbox "
        "WHERE type = 'ordering.TicketPurchased'"
    )
    async with engine.connect() as conn:
        before = int(await conn.scalar(handled) or 0)
    connection = await broker.connect(system.env["RESELLIO_AMQP_URL"])
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        started = time.monotonic()
        sent = await replay(
            engine,
            channel,
            broker.Names(system.env["RESELLIO_BROKER_PREFIX"]),
            "resale",
            ["ordering.TicketPurchased"],
            Filters(),
            reprocess=True,
        )
        deadline = started + 300
        while True:
            async with engine.connect() as conn:
                done = int(await conn.scalar(handled) or 0) - before
            if done >= sent or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - started
    if done < sent:
        raise CorrectnessError(f"repair replay: {sent - done} of {sent} events never applied")
    rate = sent / seconds
    name = "replay: TicketPurchased -> resale, --reprocess"
    return [
        Row(name, "events replayed", sent, "count"),
        Row(name, "events/s", round(rate), "/s", ">= 5000", rate >= 5000),
    ]


async def login_rows(system: System, args: argparse.Namespace) -> list[Row]:
    import httpx

    from bench.dataset import bearer

    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        me = await client.get("/api/user/me", headers=bearer(await _one_customer(system)))
        emails = [me.json()["email"]]
    rows, _ = await scenarios.login_load(system.gateway_url, args.seconds, emails, PASSWORD)
    url = f"{system.gateway_url}/api/events?limit=20"
    alone = get_loop(url, 16, args.seconds)
    login_task = asyncio.create_task(
        scenarios.login_load(system.gateway_url, args.seconds, emails, PASSWORD)
    )
    together = await asyncio.to_thread(get_loop, url, 16, args.seconds)
    _, logins = await login_task
    name = "login: browse c=16 while logins run"
    rows += [
        Row(
            name,
            "rps ratio to browse alone",
            round(together.rps / alone.rps, 3) if alone.rps else 0,
            "x",
        ),
        # ... and what browsing costs the logins: they must not starve either.
        Row(name, "logins/s meanwhile", round(logins.rps, 1), "/s"),
        Row(name, "login p99 meanwhile", round(logins.p99_ms, 1), "ms"),
    ]
    return rows


async def _one_customer(system: System) -> str:
    import httpx

    from bench.dataset import ADMIN, login, new_customer

    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        admin = await login(client, *ADMIN)
        return await new_customer(client, admin, "login")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--seconds", type=int, default=10, help="per timed scenario")
    parser.add_argument("--events", type=int, default=200)
    # The drop is a few thousand customers racing for a few hundred tickets (issue #8): every
    # customer of the dataset is one buyer.
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--capacity", type=int, default=300)
    parser.add_argument(
        "--drops", type=int, default=3, help="measured drops; the median one is reported"
    )
    parser.add_argument("--listings", type=int, default=10)
    parser.add_argument(
        "--market-listings", type=int, default=400, help="tickets listed for the marketplace"
    )
    parser.add_argument("--buyers", type=int, default=20)
    parser.add_argument(
        "--pipeline-rate",
        default="100,500",
        help="TicketPurchased events/s offered, one pipeline run per comma-separated rate, in "
        "order (one this machine sustains, on a quiet system; then the target's rate)",
    )
    parser.add_argument(
        "--scenarios", default="browse,gateway,drop,crowd,marketplace,resale,pipeline,replay,login"
    )
    parser.add_argument("--instances", default="1,2", help="comma-separated instance counts to run")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where latest.json and latest.md are written (default: bench/results)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    ensure_wrk()
    database = choose_database()
    rows: list[Row] = []
    failed: str | None = None
    started = time.time()
    for n in [int(x) for x in args.instances.split(",")]:
        try:
            asyncio.run(run_suite(args, n, rows))
        except CorrectnessError as exc:
            failed = f"[{n} instance(s)] {exc}"
            break
        except Exception as exc:
            failed = f"[{n} instance(s)] benchmark could not finish: {exc!r}"
            break
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_tool": "wrk" if have_wrk() else "python async client",
        "database": f"PostgreSQL over {database}",
        "command": "make bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started),
    }
    (args.results / "latest.json").write_text(
        json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows], "failed": failed}, indent=2)
    )
    md = (
        f"Machine: {meta['machine']}; Python {meta['python']}; load: {meta['load_tool']}; "
        f"{meta['database']}; "
        f"{meta['started']}; `{meta['command']}`\n\n{table(rows)}\n"
    )
    if failed:
        md += f"\n**FAILED**: {failed}\n"
    (args.results / "latest.md").write_text(md)
    print(md)
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
