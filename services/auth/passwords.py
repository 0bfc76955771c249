"""Password rules (API.md §2.3) and argon2id hashing, run off the event loop."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from services.kernel.validation import FieldError

# OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)


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
    return await asyncio.to_thread(HASHER.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """False for a wrong password; with no stored hash, still spends the same time."""
    if stored is None:
        await asyncio.to_thread(_verify, _dummy_hash(), password)
        return False
    return await asyncio.to_thread(_verify, stored, password)


async def warm_up_hasher() -> None:
    """Make the dummy hash at start-up, so the first unknown-email login is not slower."""
    await asyncio.to_thread(_dummy_hash)
