"""Fixtures the catalog's end-to-end modules share; import them into a test module by name.

Module-scoped: each test module gets its own administrator token, verified organizer and venue.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.actors import Account, admin_token, verified_organizer
from tests.support.catalog_actors import new_location


@pytest.fixture(scope="module")
async def admin(api: httpx.AsyncClient) -> str:
    return await admin_token(api)


@pytest.fixture(scope="module")
async def organizer(api: httpx.AsyncClient, admin: str) -> Account:
    return await verified_organizer(api, admin)


@pytest.fixture(scope="module")
async def venue(api: httpx.AsyncClient, admin: str) -> dict[str, Any]:
    return await new_location(api, admin)
