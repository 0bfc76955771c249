"""The resale service: listings, price caps, single-sale purchases and their settlement."""

from __future__ import annotations

from litestar import Litestar

from services.kernel import settings as settings_mod
from services.kernel.app import create_service_app
from services.kernel.logs import configure
from services.resale import api
from services.resale.config import current
from services.resale.consumers import HANDLERS
from services.resale.models import metadata
from services.topology import subscriptions


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
        sends_mail=True,
    )
