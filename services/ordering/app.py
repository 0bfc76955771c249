"""The ordering service: inventory, holds, carts, checkout, orders, payments, issued tickets."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from litestar import Litestar
from sqlalchemy import func, select

from contracts.timeutil import utcnow
from services.kernel import metrics
from services.kernel import settings as settings_mod
from services.kernel.app import Runtime, create_service_app
from services.kernel.logs import configure
from services.ordering import api, config, holds, recovery
from services.ordering.consumers import HANDLERS
from services.ordering.models import cart_items, metadata
from services.topology import subscriptions


async def _start_hold_sweeper(rt: Runtime) -> None:
    interval = config.current().hold_sweep_interval_s
    rt.tasks.append(
        asyncio.create_task(holds.sweep_forever(rt.db, interval, utcnow), name="ordering-holds")
    )
    rt.extras["gauges"] = _hold_gauges


async def _hold_gauges(rt: Runtime) -> None:
    async with rt.db.engine.connect() as conn:
        lines, held = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(cart_items.c.quantity), 0)).where(
                    cart_items.c.hold_expires_at > func.now()
                )
            )
        ).one()
    metrics.holds_active.labels("ordering", "lines").set(lines)
    metrics.holds_active.labels("ordering", "tickets").set(held)


async def _start_checkout_recovery(rt: Runtime) -> None:
    after = timedelta(seconds=config.current().checkout_stalled_after_s)
    provider = config.payment_provider(rt.db)
    rt.tasks.append(
        asyncio.create_task(
            recovery.recover_forever(rt.db, provider, after), name="ordering-recovery"
        )
    )


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    config.current()  # fail at start-up, not on the first request, when a setting is wrong
    configure("ordering", settings.log_level)
    return create_service_app(
        service="ordering",
        settings=settings,
        metadata=metadata,
        route_handlers=api.ROUTES,
        handlers=HANDLERS,
        topology=subscriptions(),
        on_startup=[_start_hold_sweeper, _start_checkout_recovery],
        sends_mail=True,
        caches_answers=True,
    )
