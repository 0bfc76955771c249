"""The catalog service: venues, events, ticket types and event approval."""

from __future__ import annotations

from litestar import Litestar

from services.catalog import api
from services.catalog.consumers import HANDLERS
from services.catalog.models import metadata
from services.kernel import settings as settings_mod
from services.kernel.app import create_service_app
from services.kernel.logs import configure
from services.topology import subscriptions


def create_app(settings: settings_mod.Settings | None = None) -> Litestar:
    settings = settings or settings_mod.load()
    configure("catalog", settings.log_level)
    return create_service_app(
        service="catalog",
        settings=settings,
        metadata=metadata,
        route_handlers=api.ROUTES,
        handlers=HANDLERS,
        topology=subscriptions(),
        caches_answers=True,
    )
