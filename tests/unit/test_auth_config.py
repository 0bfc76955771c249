"""Auth's start-up configuration (API.md §2.6): production refuses to start without its
secrets, with one message naming every missing one; development has defaults."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from services.auth import passwords
from services.auth.config import DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, load_auth_config
from services.auth.passwords import (
    HASHER,
    hash_password,
    password_problem,
    start_hasher,
    usable_cores,
    verify_password,
)
from services.kernel.settings import ConfigError

PRODUCTION = {
    "INITIAL_ADMIN_EMAIL": "root@example.com",
    "INITIAL_ADMIN_PASSWORD": "Sup3rSecret",
    "ADMIN_SECRET_KEY": "k" * 32,
    "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----",
}


def test_production_names_every_missing_secret_in_one_message() -> None:
    with pytest.raises(ConfigError) as error:
        load_auth_config(development=False, env={"INITIAL_ADMIN_EMAIL": "root@example.com"})
    message = str(error.value)
    for name in ("INITIAL_ADMIN_PASSWORD", "ADMIN_SECRET_KEY", "JWT_PRIVATE_KEY"):
        assert name in message
    assert "INITIAL_ADMIN_EMAIL" not in message


def test_production_refuses_a_weak_initial_password() -> None:
    with pytest.raises(ConfigError, match="INITIAL_ADMIN_PASSWORD"):
        load_auth_config(development=False, env={**PRODUCTION, "INITIAL_ADMIN_PASSWORD": "weak"})


def test_production_with_every_secret_starts() -> None:
    config = load_auth_config(development=False, env=PRODUCTION)
    assert config.initial_admin_email == "root@example.com"
    assert config.admin_secret_key == "k" * 32


def test_development_has_the_documented_defaults() -> None:
    config = load_auth_config(development=True, env={})
    assert (config.initial_admin_email, config.initial_admin_password) == (
        DEV_ADMIN_EMAIL,
        DEV_ADMIN_PASSWORD,
    )
    assert config.admin_secret_key and config.jwt_private_key is None
    assert config.app_base_url == "http://127.0.0.1:8080"
    assert config.password_reset_url == "http://127.0.0.1:8080/reset-password"
    assert config.refresh_token_days == 14


def test_password_rules_in_the_documented_order() -> None:
    assert password_problem("Ab1") == "String should have at least 8 characters"
    assert password_problem("a" * 129) == "String should have at most 128 characters"
    assert password_problem("Abcdefgh") == "Value error, Password must contain at least one digit"
    assert password_problem("abcdefg1") == (
        "Value error, Password must contain at least one uppercase letter"
    )
    assert password_problem("Abcdefg1") is None


def test_hasher_meets_owasp_argon2id() -> None:
    assert HASHER.memory_cost >= 19456 and HASHER.time_cost >= 2 and HASHER.parallelism == 1
    assert HASHER.hash("Abcdefg1").startswith("$argon2id$")


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("100000 100000", 1), ("150000 100000", 2), ("max 100000", None)]
)
def test_the_usable_cores_are_capped_by_the_containers_cpu_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, cores: int | None
) -> None:
    """A pod limited to one CPU hashes on one thread, whatever the node's cores; no limit
    ("max") leaves the cores the process may run on (at most 2 CPUs' worth rounds up)."""
    limit = tmp_path / "cpu.max"
    limit.write_text(f"{cpu_max}\n")
    monkeypatch.setattr(passwords, "CPU_MAX", limit)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores() == (affinity if cores is None else min(cores, affinity))


def test_password_hashing_threads_default_to_the_usable_cores() -> None:
    assert load_auth_config(development=True, env={}).password_hash_workers == usable_cores()
    config = load_auth_config(development=True, env={"PASSWORD_HASH_WORKERS": "3"})
    assert config.password_hash_workers == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="PASSWORD_HASH_WORKERS"):
            load_auth_config(development=True, env={"PASSWORD_HASH_WORKERS": bad})


async def test_passwords_are_hashed_by_the_pool_of_its_own_size() -> None:
    """Six logins at once on two hashing threads: every hash right, no third thread started."""

    def hashing_threads() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("password-hash")}

    start_hasher(2)
    try:
        hashes = await asyncio.gather(*(hash_password(f"Passw0rd{i}") for i in range(6)))
        assert len(hashing_threads()) == 2
        checks = await asyncio.gather(
            *(verify_password(h, f"Passw0rd{i}") for i, h in enumerate(hashes)),
            verify_password(hashes[0], "Wr0ngPassword"),
            verify_password(None, "Passw0rd0"),  # an unknown user costs a hash too
        )
        assert checks == [True] * 6 + [False, False]
        assert len(hashing_threads()) == 2
    finally:
        start_hasher(usable_cores())
