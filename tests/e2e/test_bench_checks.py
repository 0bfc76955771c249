"""The benchmark fails loudly when a correctness check inside it fails, whatever the speed
(issue #8): `python -m bench` exits non-zero and its table says FAILED when a drop oversells,
and the resale rush and the event pipeline raise when a ticket is sold twice or an event never
arrives. Each check runs first on an honest system (it passes), then on one broken on purpose,
by a trigger or a stopped consumer, the way a real bug or outage would break it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import scenarios
from bench.__main__ import BENCH_ENV
from bench.dataset import Dataset, load
from bench.scenarios import CorrectnessError
from services.kernel.db import create_engine
from tests.support.infra import database_url
from tests.support.system import ROOT, System, running

# An inventory that forgets its capacity: each claim that fills the type makes room for one
# more, so every buyer gets a ticket.
OVERSELL = """
CREATE FUNCTION ordering.sabotage_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.sold + NEW.held >= NEW.max_count THEN NEW.max_count := NEW.max_count + 1; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER sabotage_capacity BEFORE UPDATE ON ordering.ticket_types
  FOR EACH ROW EXECUTE FUNCTION ordering.sabotage_capacity();
"""

# Books that record a second standing sale of the ticket beside each purchase.
DOUBLE_SALE = """
CREATE FUNCTION resale.sabotage_double_sale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF pg_trigger_depth() = 1 THEN
    INSERT INTO resale.purchases (listing_id, ticket_id, event_id, buyer_id, seller_id,
                                  price, currency, status)
    VALUES (NEW.listing_id, NEW.ticket_id, NEW.event_id, NEW.buyer_id, NEW.seller_id,
            NEW.price, NEW.currency, 'completed');
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER sabotage_double_sale AFTER INSERT ON resale.purchases
  FOR EACH ROW EXECUTE FUNCTION resale.sabotage_double_sale();
"""


def _driver_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def bench_system() -> Iterator[System]:
    with running(dict(BENCH_ENV)) as system:
        yield system


@pytest.fixture(scope="module")
async def engine(bench_system: System) -> AsyncIterator[Any]:
    engine = create_engine(bench_system.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def data(bench_system: System) -> Dataset:
    return await load(bench_system.gateway_url, 2, 24)


async def _execute(dsn: str, sql: str) -> None:
    """`sql`'s statements in one implicit transaction, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _databases() -> set[str]:
    conn = await asyncpg.connect(_driver_dsn(database_url(), "postgres"))
    try:
        return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def _bench_database(prefix: str, proc: asyncio.subprocess.Process) -> str:
    """The database the benchmark's own system created (its run id starts with `prefix`:
    another suite's system may create one meanwhile)."""
    while proc.returncode is None:
        new = sorted(n for n in await _databases() if n.startswith(f"resellio_t_{prefix}"))
        if new:
            return new[0]
        await asyncio.sleep(0.2)
    raise AssertionError("the benchmark ended before it created its database")


async def test_the_benchmark_exits_non_zero_and_says_failed_when_a_drop_oversells(
    tmp_path: Path,
) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    results = tmp_path / "results"
    args = "--seconds 1 --events 2 --customers 30 --capacity 10 --scenarios drop --instances 1"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench", *args.split(), "--results", str(results)),
        cwd=ROOT,
        env={**os.environ, "RESELLIO_RUN_PREFIX": prefix},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        name = await _bench_database(prefix, proc)
        dsn = _driver_dsn(database_url(), name)
        # Sabotage once ordering's tables exist, long before the drop (after the dataset).
        while True:
            assert proc.returncode is None, "the benchmark ended before its drop"
            try:
                await _execute(dsn, OVERSELL)
                break
            except (asyncpg.InvalidSchemaNameError, asyncpg.UndefinedTableError):
                await asyncio.sleep(0.2)  # not migrated yet; nothing of it was kept
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    printed = output.decode()
    assert proc.returncode == 1, printed
    failure = re.search(
        r"FAILED: \[1 instance\(s\)\] ticket drop: capacity 10, tickets issued (\d+)", printed
    )
    assert failure and int(failure.group(1)) > 10, printed
    table = (results / "latest.md").read_text()
    assert f"**FAILED**: {failure.group(0).removeprefix('FAILED: ')}" in table
    result = json.loads((results / "latest.json").read_text())
    assert result["failed"].startswith("[1 instance(s)] ticket drop: capacity 10")
    # What was measured before the check failed is kept.
    assert any(r["scenario"].startswith("baseline") for r in result["rows"])
    # The benchmark's own system was stopped and its database removed.
    assert name not in await _databases()


async def test_the_resale_rush_raises_when_a_ticket_is_sold_twice(
    bench_system: System, data: Dataset, engine: Any
) -> None:
    gateways = [bench_system.gateway_url]
    rows = await scenarios.resale_rush(gateways, data, 2, 4, engine)
    assert {r.metric: r.value for r in rows}["listings with exactly one winner"] == 2
    await _execute(_driver_dsn(bench_system.database_url), DOUBLE_SALE)
    try:
        with pytest.raises(CorrectnessError, match="standing purchases per ticket"):
            await scenarios.resale_rush(gateways, data, 2, 4, engine)
    finally:
        await _execute(
            _driver_dsn(bench_system.database_url),
            "DROP TRIGGER sabotage_double_sale ON resale.purchases;"
            "DROP FUNCTION resale.sabotage_double_sale();",
        )


async def test_the_pipeline_raises_when_an_event_never_reaches_resale(
    bench_system: System, data: Dataset, engine: Any
) -> None:
    gateways = [bench_system.gateway_url]
    rows = await scenarios.event_pipeline(gateways, data, engine, 20, 1, settle_s=30)
    measured = {r.metric: r.value for r in rows}
    assert measured["events"] == 20
    assert measured["checkouts refused or failed"] == 0
    # Resale's consumer gone: ordering still sells and publishes, nothing reaches resale.
    bench_system.stop_app("resale")
    with pytest.raises(CorrectnessError, match="20 TicketPurchased events never reached resale"):
        await scenarios.event_pipeline(gateways, data, engine, 20, 1, settle_s=3)
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM ordering.outbox o WHERE o.type = 'ordering.TicketPurchased' "
                "AND NOT EXISTS (SELECT 1 FROM resale.inbox i WHERE i.event_id = o.event_id)"
            )
        )
    assert waiting == 20
