from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import contracts  # noqa: F401  (registers every event type)
from tests.support.system import System, running


@pytest.fixture(scope="session")
def system() -> Iterator[System]:
    """The whole system, running as real processes, shared by the end-to-end tests.

    RESELLIO_TEST_INSTANCES=N runs N instances of every service behind the gateway."""
    count = int(os.environ.get("RESELLIO_TEST_INSTANCES", "1"))
    services = ("auth", "catalog", "ordering", "resale")
    with running(instances={name: count for name in services} if count > 1 else None) as system:
        yield system


@pytest.fixture(scope="session")
async def api(system: System) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway, the one public entry point."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        yield client
