"""The resale service: listings, price caps, single-sale purchases and their settlement."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from litestar import Litestar

from services.kernel import settings as settings_mod
from services.kernel.app import Runtime, create_service_app
from services.kernel.logs import configure
from services.resale import api
from services.resale.config import current, payment_provider
from services.resale.consumers import HANDLERS
from services.resale.models import metadata
from services.resale.purchase import recover_stalled
from services.topology import subscriptions

log = logging.getLogger("resellio.resale")
SWEEP_EVERY_S = 15.0


async def _sweep_stalled_purchases(rt: Runtime) -> None:
    after = timedelta(seconds=current().purchase_stalled_after_s)
    while True:
        await asyncio.sleep(min(SWEEP_EVERY_S, max(0.5, after.total_seconds() / 2)))
        try:
            await recover_stalled(rt.db, payment_provider(rt.db), current().fee_percent, after)
        except Exception:  # the database may be away; the next sweep retries
            log.exception("recovering stalled purchases failed")


async def _start(rt: Runtime) -> None:
    rt.tasks.append(asyncio.create_task(_sweep_stalled_purchases(rt), name="resale-sweeper"))


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    configure("resale", settings.log_level)
    current()  # a wrong RESALE_* setting stops start-up with its message
    return create_service_app(
        service="resale",
        settings=settings,
        metadata=metadata,
        route_handlers=api.ROUTES,
        handlers=HANDLERS,
        topology=subscriptions(),
        on_startup=[_start],
        sends_mail=True,
        caches_answers=True,
    )
