"""Every service exposes /health, /ready and Prometheus /metrics with the operators' numbers."""

from __future__ import annotations

import re

import httpx

from tests.support.system import System

SERVICES = ("auth", "catalog", "ordering", "resale")


async def test_every_service_is_live_ready_and_exposes_its_metrics(system: System) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for service in SERVICES:
            base = system.url(service)
            assert (await client.get(f"{base}/health")).status_code == 200
            ready = await client.get(f"{base}/ready")
            assert ready.status_code == 200
            assert ready.json() == {"database": "ok", "broker": "ok", "schema": "ok"}
            await client.get(f"{base}/api/nothing")  # one request, so the route metrics exist
            scraped = await client.get(f"{base}/metrics")
            # One charset parameter: Prometheus refuses a media type with a duplicate one.
            assert scraped.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
            text = scraped.text
            assert "resellio_http_requests_total{" in text, service
            assert "resellio_http_request_seconds_bucket{" in text, service
            assert f'resellio_outbox_backlog{{producer="{service}"}}' in text, service
            if service != "auth":  # auth consumes nothing, so it has no dead-letter queue
                assert f'resellio_dead_letters{{consumer="{service}"}} 0.0' in text, service
        ordering = (await client.get(f"{system.url('ordering')}/metrics")).text
        assert 'resellio_holds{service="ordering",unit="tickets"}' in ordering


async def test_metrics_count_handled_events_and_their_lag(
    system: System, api: httpx.AsyncClient
) -> None:
    # Registering publishes auth.UserRegistered, which catalog, ordering and resale consume.
    import uuid

    email = f"metrics-{uuid.uuid4().hex[:8]}@example.com"
    response = await api.post(
        "/api/auth/register/customer",
        json={
            "email": email,
            "login": email,
            "password": "Secret123!",
            "first_name": "M",
            "last_name": "X",
        },
    )
    assert response.status_code == 201
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(100):
            # One instance of a service consumes at a time (single active consumer): whichever
            # it is, its metrics are read.
            pages = [
                (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                for _, port in system.instances("ordering")
            ]
            text = next((page for page in pages if "auth.UserRegistered" in page), pages[0])
            if (
                'resellio_events_handled_total{consumer="ordering",outcome="ok",type="auth.UserRegistered"}'
                in text
            ):
                break
            import asyncio

            await asyncio.sleep(0.1)
        assert (
            'resellio_events_handled_total{consumer="ordering",outcome="ok",type="auth.UserRegistered"}'
            in text
        )
        assert 'resellio_consumer_lag_seconds_bucket{consumer="ordering"' in text
        assert 'resellio_event_handle_seconds_bucket{consumer="ordering"' in text
        auth = (await client.get(f"{system.url('auth')}/metrics")).text
        assert 'resellio_outbox_published_total{producer="auth"}' in auth
        assert re.search(
            r'resellio_outbox_publish_seconds_bucket\{le="[^"]+",producer="auth"\}', auth
        )


async def test_the_gateway_is_ready_and_counts_what_it_answered(system: System) -> None:
    gateway = system.gateway_url
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "auth": "ok",
            "catalog": "ok",
            "ordering": "ok",
            "resale": "ok",
            "deny_list": "ok",
        }
        before = _gateway_counts((await client.get("/metrics")).text)
        assert (await client.get("/api/events")).status_code == 200
        assert (await client.get("/api/nothing-here")).status_code == 404
        page = await client.get("/metrics")
        assert (
            page.status_code == 200
            and page.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
        )
        after = _gateway_counts(page.text)
        assert after[("catalog", "GET", "200")] - before.get(("catalog", "GET", "200"), 0) == 1
        assert after[("unrouted", "GET", "404")] - before.get(("unrouted", "GET", "404"), 0) == 1
        assert 'resellio_gateway_request_seconds_bucket{le="+Inf",route="catalog"}' in page.text
        assert "resellio_gateway_deny_list_loaded 1.0" in page.text
        # Through a proxy (or from outside GATEWAY_METRICS_NETWORKS) there is no such page.
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 404 and proxied.json() == {"detail": "Not Found"}


def _gateway_counts(text: str) -> dict[tuple[str, str, str], float]:
    pattern = re.compile(
        r'^resellio_gateway_requests_total\{method="([^"]+)",route="([^"]+)",status="(\d+)"\} (\S+)$',
        re.MULTILINE,
    )
    return {(route, method, status): float(n) for method, route, status, n in pattern.findall(text)}
