"""Kernel settings read from the environment: the relay's placement, pool sizes."""

from __future__ import annotations

import pytest

from services.kernel.settings import ConfigError, load


def test_services_relay_their_own_outbox_unless_told_it_runs_apart() -> None:
    assert load({}).relay_inline is True
    assert load({"RESELLIO_RELAY": "inline"}).relay_inline is True
    assert load({"RESELLIO_RELAY": " External "}).relay_inline is False


def test_an_unknown_relay_placement_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="RESELLIO_RELAY must be 'inline' or 'external'"):
        load({"RESELLIO_RELAY": "sidecar"})


def test_the_relay_paces_its_batches_by_25_milliseconds_unless_told_otherwise() -> None:
    assert load({}).relay_batch_interval_ms == 25
    assert load({"RESELLIO_RELAY_BATCH_INTERVAL_MS": "0"}).relay_batch_interval_ms == 0
    with pytest.raises(ConfigError, match="RESELLIO_RELAY_BATCH_INTERVAL_MS"):
        load({"RESELLIO_RELAY_BATCH_INTERVAL_MS": "soon"})


def test_a_service_may_have_a_pool_of_its_own_size() -> None:
    settings = load({"RESELLIO_DB_POOL_SIZE": "6", "RESELLIO_ORDERING_DB_POOL_SIZE": "20"})
    assert settings.db_pool_size_for("ordering") == 20
    assert settings.db_pool_size_for("catalog") == 6
    with pytest.raises(ConfigError, match="RESELLIO_AUTH_DB_POOL_SIZE"):
        load({"RESELLIO_AUTH_DB_POOL_SIZE": "many"})
