"""Prometheus metrics of the sidecar (one registry per app, so tests build their own)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scoring import ScoringPipeline
from scoring.model_reload import ModelReloader

METHODS = frozenset({"GET", "POST"})
SHED_REASONS = ("in_flight", "queue", "parse", "deadline")


def method_label(method: str) -> str:
    """``GET``, ``POST`` or ``OTHER``: no request can add a label value."""
    return method if method in METHODS else "OTHER"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PipelineCollector(Collector):
    """Exports the pipeline's running totals at scrape time."""

    def __init__(self, pipeline: ScoringPipeline) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._pipeline.stats
        enrichment = CounterMetricFamily(
            "streamscore_enrichment", "Scored events by enrichment outcome", labels=["outcome"]
        )
        enrichment.add_metric(["hit"], stats.hits)
        enrichment.add_metric(["miss"], stats.misses)
        enrichment.add_metric(["error"], stats.errors)
        yield enrichment
        yield CounterMetricFamily(
            "streamscore_mongo_failures", "Failed MongoDB reads", value=stats.enrichment_failures
        )
        yield CounterMetricFamily(
            "streamscore_model_calls", "Booster.predict calls", value=stats.model_calls
        )
        yield CounterMetricFamily(
            "streamscore_ignored_features",
            "Event features the model does not use",
            value=stats.ignored_features,
        )
        model = self._pipeline.model
        info = GaugeMetricFamily(
            "streamscore_model_info", "The model in use", labels=["name", "version"]
        )
        info.add_metric([model.name, model.version], 1)
        yield info


class ReloadCollector(Collector):
    def __init__(self, reloader: ModelReloader) -> None:
        self._reloader = reloader

    def collect(self) -> Iterator[CounterMetricFamily]:
        reloads = CounterMetricFamily(
            "streamscore_model_reloads", "Model reloads by result", labels=["result"]
        )
        reloads.add_metric(["loaded"], self._reloader.stats.loaded)
        reloads.add_metric(["refused"], self._reloader.stats.refused)
        yield reloads


class ApiMetrics:
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
        self.batch_size = Histogram(
            "streamscore_batch_size",
            "Events per pipeline call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "streamscore_event_loop_lag_seconds",
            "How late the event loop runs a timer",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.loop_lag_last = Gauge(
            "streamscore_event_loop_lag_last_seconds",
            "The latest event-loop lag sample",
            registry=self.registry,
        )

    def watch(self, pipeline: ScoringPipeline) -> None:
        self.registry.register(PipelineCollector(pipeline))

    def watch_reloads(self, reloader: ModelReloader) -> None:
        self.registry.register(ReloadCollector(reloader))

    def lag_sample(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.loop_lag_last.set(seconds)
