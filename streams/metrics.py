"""The stream door's own Prometheus metrics (what the Kafka transport does), observed as things
happen. Scoring metrics (enrichment, cache, model, loop lag) come from the scoring service's
collector, registered in the same registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONSUMED_BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
STAGES = ("parse", "score", "send", "ack", "commit")
"""parse: records to events; score: the scoring service's call (enrichment + model);
send: handing outputs to the producer; ack: until Kafka acknowledged them all; commit."""


class StreamMetrics:
    """Counters and histograms of the consume → publish → commit loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter(
            "streamscore_records_consumed", "Records read from the input topic", registry=registry
        )
        self.scored = Counter(
            "streamscore_records_scored", "Predictions acknowledged by Kafka", registry=registry
        )
        self.dead_lettered = Counter(
            "streamscore_records_dead_lettered",
            "Dead letters acknowledged by Kafka, by reason",
            ["reason"],
            registry=registry,
        )
        self.commits = Counter("streamscore_commits", "Offset commits", registry=registry)
        self.commit_failures = Counter(
            "streamscore_commit_failures", "Failed offset commits", registry=registry
        )
        self.retries = Counter(
            "streamscore_retries",
            "Retries by stage (score: MongoDB or model; publish: unacknowledged outputs; "
            "batch: an unexpected error; fetch: an unreadable fetch)",
            ["stage"],
            registry=registry,
        )
        self.batch_records = Histogram(
            "streamscore_consumed_batch_records",
            "Records per consumed batch",
            buckets=CONSUMED_BATCH_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "streamscore_stream_stage_seconds",
            "Time per stage of a consumed batch",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for stage in ("score", "publish", "batch", "fetch", "transaction"):
            self.retries.labels(stage)

    def observe(self, stage: str, seconds: float) -> None:
        """A stage finished (``commit`` also counts a commit; ``commit_failed`` a failure)."""
        if stage == "commit_failed":
            self.commit_failures.inc()
            return
        if stage == "commit":
            self.commits.inc()
        self.stage_seconds.labels(stage).observe(seconds)


Assignment = Callable[[], Iterator[tuple[TopicPartition, int, int]]]
"""Yields (partition, highwater, committed next offset) of the assigned partitions."""


class ConsumerLag(Collector):
    """``streamscore_consumer_lag``: records not yet committed, per assigned partition (read at
    scrape time from the consumer's own positions: a gauge of the present, not a window)."""

    def __init__(self, assignment: Assignment) -> None:
        self._assignment = assignment

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "streamscore_consumer_lag",
            "Records not yet committed, per assigned partition",
            labels=["topic", "partition"],
        )
        for tp, highwater, committed in self._assignment():
            lag.add_metric([tp.topic, str(tp.partition)], max(0, highwater - committed))
        yield lag


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Start the endpoint in a background thread; returns the server (call ``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
