"""The ordering service: inventory, holds, carts, checkout, orders, payments, issued tickets."""

from __future__ import annotations

import asyncio

from litestar import Litestar

from contracts.timeutil import utcnow
from services.kernel import settings as settings_mod
from services.kernel.app import Runtime, create_service_app
from services.kernel.logs import configure
from services.ordering import api, config, holds
from services.ordering.consumers import HANDLERS
from services.ordering.models import metadata
from services.topology import subscriptions


async def _start_hold_sweeper(rt: Runtime) -> None:
    interval = config.current().hold_sweep_interval_s
    rt.tasks.append(
        asyncio.create_task(holds.sweep_forever(rt.db, interval, utcnow), name="ordering-holds")
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
        on_startup=[_start_hold_sweeper],
        sends_mail=True,
    )
