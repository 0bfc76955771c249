"""Password rules (API.md §2.3) and argon2id hashing, run off the event loop in a pool of its
own.

Hashing is the one CPU-bound step of a request. asyncio's default pool has cores + 4 threads,
and the kernel shares the cores between threads, not processes: a burst of logins took six
threads' worth of a 2-core machine and left browsing a fifth of its rate (`make bench`'s
login rows). With one thread per core the process may use (`PASSWORD_HASH_WORKERS` to change
it), logins still use the whole machine when nothing else runs, and only their share of it
when something does."""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from services.kernel.validation import FieldError

# OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)

T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None


# A container's CPU limit (cgroup v2: "<quota> <period>" in µs, or "max <period>").
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by its container's CPU
    limit (a pod limited to one CPU on a 32-core node hashes on one thread, not 32 at 19 MiB
    each), where the system tells them."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        quota, period = CPU_MAX.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to read
    return cores


def start_hasher(workers: int) -> None:
    """The hashing pool, `workers` threads (replaced if it was started already)."""
    global _pool
    old, _pool = _pool, ThreadPoolExecutor(workers, thread_name_prefix="password-hash")
    if old is not None:
        old.shutdown(wait=True)  # at start-up, before any request: nothing to wait for


async def _hashing(fn: Callable[..., T], *args: object) -> T:
    if _pool is None:  # a tool or test that never started the app
        start_hasher(usable_cores())
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so login takes as long either way."""
    return HASHER.hash("not-a-real-password-0")


_RULES = (
    (lambda p: len(p) < 8, "String should have at least 8 characters", "string_too_short"),
    (lambda p: len(p) > 128, "String should have at most 128 characters", "string_too_long"),
    (
        lambda p: not any(c.isdigit() for c in p),
        "Value error, Password must contain at least one digit",
        "value_error",
    ),
    (
        lambda p: not any(c.isupper() for c in p),
        "Value error, Password must contain at least one uppercase letter",
        "value_error",
    ),
)


def password_problem(password: str) -> str | None:
    """The first rule the password breaks, in the order API.md lists them."""
    for broken, message, _ in _RULES:
        if broken(password):
            return message
    return None


def strong_password(password: str) -> str:
    """A validation Check for `password` / `new_password` fields."""
    for broken, message, kind in _RULES:
        if broken(password):
            raise FieldError(message, kind)
    return password


async def hash_password(password: str) -> str:
    return await _hashing(HASHER.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """False for a wrong password; with no stored hash, still spends the same time."""
    if stored is None:
        await _hashing(_verify, _dummy_hash(), password)
        return False
    return await _hashing(_verify, stored, password)


async def warm_up_hasher() -> None:
    """Make the dummy hash at start-up, so the first unknown-email login is not slower."""
    await _hashing(_dummy_hash)
