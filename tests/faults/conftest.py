"""One running system for the fault tests, whose services reach PostgreSQL and RabbitMQ through
cuttable proxies (the shared servers are never stopped: other test runs use them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.faults import CuttableProxy
from tests.support.infra import amqp_url
from tests.support.system import System

# Short enough for a test to see it, long enough for any live checkout (see ordering's config).
STALLED_CHECKOUT_S = 5
GATEWAY_TIMEOUT_S = 13  # above resale's 10 s wait for a transfer
PART_TIMEOUT_S = 2  # the composed page's wait for a part


@dataclass
class Rig:
    system: System
    database: CuttableProxy
    broker: CuttableProxy


@pytest.fixture(scope="package")
def rig() -> Iterator[Rig]:
    system = System(
        extra_env={
            "CHECKOUT_STALLED_AFTER_S": str(STALLED_CHECKOUT_S),
            "PURCHASE_STALLED_AFTER_S": str(STALLED_CHECKOUT_S),
            "GATEWAY_REQUEST_TIMEOUT_S": str(GATEWAY_TIMEOUT_S),
            "GATEWAY_PART_TIMEOUT_S": str(PART_TIMEOUT_S),
            "RATE_LIMITS": "off",
        }
    )
    db_url = make_url(system.database_url)
    amqp = make_url(amqp_url().replace("amqp://", "postgresql://", 1))
    database = CuttableProxy(db_url.host or "127.0.0.1", db_url.port or 5432).start()
    rabbit = CuttableProxy(amqp.host or "127.0.0.1", amqp.port or 5672).start()
    # Every process goes through the proxies; the tests' own reads (system.database_url) do not.
    system.env["RESELLIO_DATABASE_URL"] = db_url.set(port=database.port).render_as_string(
        hide_password=False
    )
    system.env["RESELLIO_AMQP_URL"] = amqp_url().replace(
        f":{amqp.port or 5672}/", f":{rabbit.port}/", 1
    )
    assert str(rabbit.port) in system.env["RESELLIO_AMQP_URL"]
    try:
        system.start()
        yield Rig(system, database, rabbit)
    finally:
        database.restore()
        rabbit.restore()
        try:
            system.env["RESELLIO_AMQP_URL"] = amqp_url()
            system.stop()
        finally:
            database.stop()
            rabbit.stop()


@pytest.fixture(scope="package")
async def gw(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the rig's gateway."""
    async with httpx.AsyncClient(base_url=rig.system.gateway_url, timeout=60) as client:
        yield client
