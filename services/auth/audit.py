"""Auth's audit log (API.md §2.6): tokens issued for another user, bans, unbans, organizer
decisions. Written in the same transaction as the action it records."""

from __future__ import annotations

from typing import Any

from services.auth.models import audit_log
from services.kernel import context
from services.kernel.db import UnitOfWork


async def record(
    uow: UnitOfWork,
    action: str,
    actor_user_id: int | None,
    target_user_id: int,
    jti: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await uow.execute(
        audit_log.insert().values(
            action=action,
            actor_user_id=actor_user_id,
            target_user_id=target_user_id,
            jti=jti,
            request_id=context.correlation_id.get(),
            details=details,
        )
    )
