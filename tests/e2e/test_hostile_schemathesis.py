"""Hostile input: Schemathesis fuzzes every operation of the gateway's merged OpenAPI document
(issue 9), once per role, with valid and with schema-breaking requests.

Checks, per response: never a 5xx; the status and body match what the document says (the
`{"detail": ...}` / 422 shapes of services.kernel.openapi included); a request that breaks
the documented schema is refused (4xx), never accepted.

The fuzzer bans, cancels and deletes whatever ids it guesses, so it runs in a System of its
own. Deterministic (derandomized Hypothesis); FUZZ_EXAMPLES bounds the examples per operation
and mode (default keeps the whole module around two minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.actors import active_customer, admin_token, verified_organizer
from tests.support.system import System

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
ROLES = ("anonymous", "customer", "organizer", "administrator")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Operations that accept any request by contract: API.md 3.6, logout is always 200 ("bad
# credentials ignored"), whatever the body.
ALWAYS_ACCEPTED = {"POST /api/auth/logout"}


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[System]:
    system = System()
    try:
        system.start()
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
async def tokens(fuzzed: System) -> AsyncIterator[dict[str, str | None]]:
    async with httpx.AsyncClient(base_url=fuzzed.gateway_url, timeout=30) as api:
        admin = await admin_token(api)
        yield {
            "anonymous": None,
            "customer": (await active_customer(api, admin)).token,
            "organizer": (await verified_organizer(api, admin)).token,
            "administrator": admin,
        }


@pytest.fixture(scope="module")
def document(fuzzed: System) -> dict[str, Any]:
    response = httpx.get(f"{fuzzed.gateway_url}/docs/openapi.json", timeout=30)
    assert response.status_code == 200
    merged: dict[str, Any] = response.json()
    assert "Not available" not in merged["info"]["description"]
    return merged


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    checks: list[Any],
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)

    run()


@pytest.mark.parametrize("role", ROLES)
def test_fuzz_the_merged_document(
    role: str, fuzzed: System, tokens: dict[str, str | None], document: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_dict(document)
    token = tokens[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS
            if operation.label in ALWAYS_ACCEPTED:
                checks = [c for c in CHECKS if c is not negative_data_rejection]
            try:
                _fuzz_operation(operation, mode, fuzzed.gateway_url, headers, checks)
            except Unsatisfiable:
                continue  # nothing in this operation can be made schema-breaking
            except (Exception, BaseExceptionGroup) as exc:  # every operation fuzzed, all reported
                failures.append(f"{role} {mode.value} {operation.label}:\n{exc}")
    assert operations >= 50, operations
    assert not failures, "\n\n".join(failures)
