"""Prometheus metrics shared by every service (one registry per process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

http_requests = Counter(
    "resellio_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
http_latency = Histogram(
    "resellio_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
answers_served = Counter(
    "resellio_answers_total",
    "Public read answers, from memory (hit) or built (miss)",
    ["schema", "outcome"],
)
outbox_published = Counter("resellio_outbox_published_total", "Events published", ["producer"])
outbox_unroutable = Counter(
    "resellio_outbox_unroutable_total", "Events no queue was bound for", ["producer", "type"]
)
outbox_backlog = Gauge("resellio_outbox_backlog", "Outbox rows not yet published", ["producer"])
publish_latency = Histogram(
    "resellio_outbox_publish_seconds",
    "Commit-to-confirm latency of events",
    ["producer"],
    buckets=LATENCY_BUCKETS,
)
events_handled = Counter(
    "resellio_events_handled_total", "Events handled", ["consumer", "type", "outcome"]
)
event_handle_seconds = Histogram(
    "resellio_event_handle_seconds",
    "Time to handle one event",
    ["consumer", "type"],
    buckets=LATENCY_BUCKETS,
)
consumer_lag = Histogram(
    "resellio_consumer_lag_seconds",
    "From an event's occurrence to its handling",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
)
dead_letter_depth = Gauge(
    "resellio_dead_letters", "Messages in the dead-letter queue", ["consumer"]
)


_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: every request asks for one of a few children,
    and prometheus_client checks the labels and takes a lock each time it is asked."""
    key = (metric, *values)
    found = _children.get(key)
    if found is None:
        if len(_children) >= 10_000:  # label values are bounded; this only bounds a surprise
            _children.clear()
        found = _children[key] = metric.labels(*values)
    return found


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


holds_active = Gauge("resellio_holds", "Cart holds in force (lines, tickets)", ["service", "unit"])
