"""One OpenAPI document for the whole API: the services' documents merged (API.md §1.1)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.kernel.upstream import UpstreamError, Upstreams

SCHEMA_PATH = "/schema/openapi.json"
_REF = "#/components/schemas/"

DOCS_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Resellio API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="docs"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/docs/openapi.json", dom_id: "#docs"});</script>
</body></html>
"""


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF) :] in renames:
            node = {**node, "$ref": _REF + renames[ref[len(_REF) :]]}
        return {k: _rename_refs(v, renames) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def merge(documents: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Public paths, schemas and tags of every service that answered. Two services with a
    different schema of the same name keep both, the later one prefixed with its service."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for service, document in documents.items():
        if not document:
            continue
        own = (document.get("components") or {}).get("schemas") or {}
        renames = {
            name: f"{service}_{name}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        if renames:
            document = _rename_refs(document, renames)
            own = document["components"]["schemas"]
        for name, schema in own.items():
            schemas[renames.get(name, name)] = schema
        for path, item in (document.get("paths") or {}).items():
            if path.startswith("/api"):
                paths[path] = item
        for tag in document.get("tags") or ():
            tags.setdefault(tag.get("name"), tag)
    missing = sorted(s for s, d in documents.items() if not d)
    description = "The public Resellio API, one document for every service behind the gateway."
    if missing:
        description += " Not available right now: " + ", ".join(missing) + "."
    return {
        "openapi": "3.1.0",
        "info": {"title": "Resellio API", "version": "1.0.0", "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "tags": list(tags.values()),
    }


class MergedDocument:
    """Fetched from every service at once, cached briefly (services come and go)."""

    def __init__(self, upstreams: Upstreams, services: tuple[str, ...], ttl_s: float = 10.0):
        self.upstreams = upstreams
        self.services = services
        self.ttl_s = ttl_s
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        try:
            document = await self.upstreams.get_json(service, SCHEMA_PATH, 5.0)
        except UpstreamError:
            return None
        return document if isinstance(document, dict) else None

    async def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.ttl_s:
            return self._cached[1]
        found = await asyncio.gather(*(self._fetch(s) for s in self.services))
        document = merge(dict(zip(self.services, found, strict=True)))
        self._cached = (now, document)
        return document
