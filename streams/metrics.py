"""Prometheus metrics of the stream scorer, served on ``STREAMSCORE_STREAM__METRICS_PORT``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from streams.app import StreamRuntime

BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


def _histogram(
    name: str, doc: str, values: list[float], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= b) for b in buckets]
    return HistogramMetricFamily(
        name,
        doc,
        buckets=[(str(b), c) for b, c in zip(buckets, counts, strict=True)]
        + [("+Inf", len(values))],
        sum_value=sum(values),
    )


class ScorerCollector(Collector):
    """Reads the running scorer's counters at scrape time (no work on the hot path)."""

    def __init__(self, runtime: StreamRuntime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime
        processor = runtime.processor
        if processor is None:
            return
        stats = processor.stats
        yield CounterMetricFamily(
            "streamscore_records_consumed", "Records read from the input topic", stats.consumed
        )
        yield CounterMetricFamily(
            "streamscore_records_scored", "Predictions published", stats.scored
        )
        dead = CounterMetricFamily(
            "streamscore_records_dead_lettered", "Dead letters by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.dead_lettered.items()):
            dead.add_metric([reason], count)
        yield dead
        yield CounterMetricFamily("streamscore_commits", "Offset commits", stats.commits)
        yield CounterMetricFamily(
            "streamscore_commit_failures", "Failed offset commits", stats.commit_failures
        )
        yield CounterMetricFamily(
            "streamscore_retries", "Batch retries (MongoDB or Kafka failures)", stats.retries
        )
        stages = CounterMetricFamily(
            "streamscore_stage_seconds", "Time spent per stage", labels=["stage"]
        )
        for stage, seconds in stats.stage_seconds.items():
            stages.add_metric([stage], seconds)
        pipeline = processor.pipeline
        stages.add_metric(["enrich"], pipeline.stats.enrich_seconds)
        stages.add_metric(["model"], pipeline.stats.score_seconds)
        yield stages
        yield _histogram(
            "streamscore_batch_size",
            "Records per consumed batch",
            [float(v) for v in stats.batch_sizes],
            BATCH_BUCKETS,
        )
        enrichment = CounterMetricFamily(
            "streamscore_enrichment", "Scored events by enrichment outcome", labels=["outcome"]
        )
        enrichment.add_metric(["hit"], pipeline.stats.hits)
        enrichment.add_metric(["miss"], pipeline.stats.misses)
        enrichment.add_metric(["error"], pipeline.stats.errors)
        yield enrichment
        cache = pipeline.cache
        if cache is not None:
            lookups = CounterMetricFamily(
                "streamscore_cache_lookups", "Entity cache lookups", labels=["result"]
            )
            lookups.add_metric(["hit"], cache.stats.hits)
            lookups.add_metric(["miss"], cache.stats.misses)
            yield lookups
        yield CounterMetricFamily(
            "streamscore_mongo_failures", "Failed MongoDB reads", pipeline.stats.enrichment_failures
        )
        model = pipeline.model
        info = GaugeMetricFamily(
            "streamscore_model_info", "The model in use", labels=["name", "version"]
        )
        info.add_metric([model.name, model.version], 1)
        yield info
        if runtime.reloader is not None:
            reloads = CounterMetricFamily(
                "streamscore_model_reloads", "Model reloads by result", labels=["result"]
            )
            reloads.add_metric(["loaded"], runtime.reloader.stats.loaded)
            reloads.add_metric(["refused"], runtime.reloader.stats.refused)
            yield reloads
        yield from self._lag(stats.committed)
        if runtime.loop_lag is not None:
            yield _histogram(
                "streamscore_event_loop_lag_seconds",
                "How late the event loop runs a timer",
                runtime.loop_lag.samples[-10_000:],
                LAG_BUCKETS,
            )

    def _lag(self, committed: dict[Any, int]) -> Iterator[Metric]:
        consumer = self._runtime.consumer
        lag = GaugeMetricFamily(
            "streamscore_consumer_lag",
            "Records not yet committed, per assigned partition",
            labels=["topic", "partition"],
        )
        if consumer is not None:
            for tp in sorted(consumer.assignment(), key=lambda t: (t.topic, t.partition)):
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                done = committed.get(tp)
                if done is None:
                    continue
                lag.add_metric([tp.topic, str(tp.partition)], max(0, highwater - done))
        yield lag


def serve_metrics(runtime: StreamRuntime, host: str, port: int) -> Any:
    """Start the endpoint in a background thread; returns the server (call ``shutdown()``)."""
    registry = CollectorRegistry()
    registry.register(ScorerCollector(runtime))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
