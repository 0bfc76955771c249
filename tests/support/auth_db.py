"""Direct reads and writes of auth's schema, for what no API shows: the stored password hash,
and moving a token's expiry into the past instead of waiting a day."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.system import System


async def auth_sql(system: System, statement: str, **params: Any) -> list[Any]:
    """Run one statement in the running system's database; rows if it returns any."""
    engine = create_async_engine(system.database_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        await engine.dispose()


async def _expire_now(system: System, table: str, user_id: int) -> None:
    await auth_sql(
        system,
        f"UPDATE auth.{table} SET expires_at = now() - interval '1 second'"
        " WHERE user_id = :user_id",
        user_id=user_id,
    )


async def expire_mailed_tokens(system: System, user_id: int) -> None:
    """Every emailed token of the user expires now."""
    await _expire_now(system, "mailed_tokens", user_id)


async def expire_refresh_tokens(system: System, user_id: int) -> None:
    """Every refresh token of the user expires now (instead of in 14 days)."""
    await _expire_now(system, "refresh_tokens", user_id)
