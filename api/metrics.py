"""The sidecar's transport metrics: requests, latency, shedding, in flight, queued.

The scoring metrics (enrichment, model calls, events per pipeline call, loop lag, ...) are the
shared :class:`scoring.metrics.ScoringMetrics`, registered in the same registry by the scoring
service. Every family here is named ``streamscore_http_*``: none shares a name with the stream.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

METHODS = frozenset({"GET", "POST"})
SHED_REASONS = ("in_flight", "queue", "parse", "deadline")


def method_label(method: str) -> str:
    """``GET``, ``POST`` or ``OTHER``: no request can add a label value."""
    return method if method in METHODS else "OTHER"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiMetrics:
    """One registry per app (tests build their own); the scoring service adds its collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamscore_http_requests",
            "HTTP requests by method (GET/POST/OTHER), route (or 'unmatched') and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamscore_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "streamscore_http_shed",
            "Requests answered 503 at once because the sidecar was full, or at their deadline",
            ["reason"],
            registry=self.registry,
        )
        for reason in SHED_REASONS:
            self.shed.labels(reason)
        self.in_flight = Gauge(
            "streamscore_http_in_flight",
            "/predict requests being handled",
            registry=self.registry,
        )
        self.queued_events = Gauge(
            "streamscore_http_queued_events",
            "Events waiting for or in a pipeline call",
            registry=self.registry,
        )
