"""Forwarding to the services over pooled HTTP connections."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

import httpx

log = logging.getLogger("resellio.gateway")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)


class Upstreams:
    """Round-robin over each service's instances, one shared connection pool."""

    def __init__(self, urls: dict[str, list[str]], timeout_s: float) -> None:
        self._cycles = {name: itertools.cycle(list(u)) for name, u in urls.items()}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=2.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )

    def base_url(self, service: str) -> str:
        return next(self._cycles[service])

    async def forward(
        self,
        service: str,
        method: str,
        path_and_query: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
    ) -> httpx.Response:
        url = self.base_url(service) + path_and_query
        request = self.client.build_request(
            method,
            url,
            headers=[(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP],
            content=body,
        )
        return await self.client.send(request)

    async def close(self) -> None:
        await self.client.aclose()
