"""The scoring metrics: one collector, observed as things happen, monotonic over hours."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scoring.metrics import ScoringMetrics
from telemetry.loop_lag import LoopLagMonitor


def registered() -> tuple[ScoringMetrics, CollectorRegistry]:
    metrics, registry = ScoringMetrics(), CollectorRegistry()
    registry.register(metrics)
    return metrics, registry


def value(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    found = registry.get_sample_value(sample, labels)
    assert found is not None, sample
    return found


def test_every_family_is_exported_once_with_its_zero_series() -> None:
    _, registry = registered()
    text = generate_latest(registry).decode()
    for outcome in ("hit", "miss", "error"):
        assert value(registry, "streamscore_enrichment_total", outcome=outcome) == 0
    for result in ("loaded", "refused"):
        assert value(registry, "streamscore_model_reloads_total", result=result) == 0
    assert value(registry, "streamscore_pipeline_call_events_count") == 0
    assert value(registry, "streamscore_event_loop_lag_seconds_count") == 0
    assert "streamscore_batch_size" not in text  # the stream's name, with another meaning
    assert "streamscore_stage_seconds" not in text
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(ScoringMetrics())  # once per registry


def test_a_pipeline_call_is_counted_in_every_family_it_touches() -> None:
    metrics, registry = registered()
    metrics.pipeline_call(
        events=5,
        outcomes={"hit": 3, "miss": 2, "error": 0},
        ignored_features=4,
        enrich_s=0.002,
        model_s=0.03,
    )
    assert value(registry, "streamscore_events_scored_total") == 5
    assert value(registry, "streamscore_model_calls_total") == 1
    assert value(registry, "streamscore_pipeline_call_events_bucket", le="4.0") == 0
    assert value(registry, "streamscore_pipeline_call_events_bucket", le="8.0") == 1
    assert value(registry, "streamscore_pipeline_call_events_sum") == 5
    assert value(registry, "streamscore_enrichment_total", outcome="hit") == 3
    assert value(registry, "streamscore_enrichment_total", outcome="miss") == 2
    assert value(registry, "streamscore_ignored_features_total") == 4
    assert value(registry, "streamscore_enrich_seconds_bucket", le="0.0025") == 1
    assert value(registry, "streamscore_model_seconds_bucket", le="0.025") == 0
    assert value(registry, "streamscore_model_seconds_bucket", le="0.05") == 1
    assert value(registry, "streamscore_model_seconds_sum") == pytest.approx(0.03)


def test_model_info_names_only_the_model_in_use() -> None:
    metrics, registry = registered()
    metrics.model_in_use("fraud", "1")
    metrics.model_in_use("fraud", "2")
    assert value(registry, "streamscore_model_info", name="fraud", version="2") == 1
    assert (
        registry.get_sample_value("streamscore_model_info", {"name": "fraud", "version": "1"})
        is None
    )


def test_the_backend_gauge_and_fallbacks_follow_each_model() -> None:
    metrics, registry = registered()
    assert value(registry, "streamscore_model_backend_fallbacks_total", role="model") == 0
    metrics.backend_in_use("model", "compiled")
    metrics.backend_in_use("challenger", "lightgbm", fell_back=True)
    assert value(registry, "streamscore_model_backend", role="model", backend="compiled") == 1
    assert value(registry, "streamscore_model_backend", role="model", backend="lightgbm") == 0
    assert value(registry, "streamscore_model_backend_fallbacks_total", role="challenger") == 1
    metrics.backend_in_use("model", "lightgbm", fell_back=True)
    assert value(registry, "streamscore_model_backend", role="model", backend="lightgbm") == 1
    assert value(registry, "streamscore_model_backend_fallbacks_total", role="model") == 1
    metrics.backend_in_use("challenger", None)  # detached: no series
    for backend in ("lightgbm", "compiled"):
        labels = {"role": "challenger", "backend": backend}
        assert registry.get_sample_value("streamscore_model_backend", labels) is None
    assert value(registry, "streamscore_model_backend_fallbacks_total", role="challenger") == 1


def test_pipeline_counters_never_go_back_over_hours_of_calls() -> None:
    """Ten hours of one call every 200 ms: every scrape sees every count grown by exactly the
    calls since the last (no window, no trimmed list)."""
    metrics, registry = registered()
    calls_per_scrape, scrapes = 3_000, 60  # a scrape every 10 simulated minutes
    sizes = (1, 7, 64, 500, 2_048)
    previous = 0.0
    for _ in range(scrapes):
        for i in range(calls_per_scrape):
            size = sizes[i % len(sizes)]
            metrics.pipeline_call(
                events=size, outcomes={"hit": size}, ignored_features=0, enrich_s=0.001, model_s=0
            )
        count = value(registry, "streamscore_pipeline_call_events_count")
        assert count == previous + calls_per_scrape
        assert value(registry, "streamscore_model_calls_total") == count
        assert value(registry, "streamscore_pipeline_call_events_bucket", le="+Inf") == count
        previous = count
    total = calls_per_scrape * scrapes
    assert value(registry, "streamscore_pipeline_call_events_bucket", le="1.0") == total / 5
    assert value(registry, "streamscore_pipeline_call_events_bucket", le="2048.0") == total
    assert value(registry, "streamscore_events_scored_total") == total / 5 * sum(sizes)


async def test_loop_lag_histogram_keeps_changing_after_hours() -> None:
    """Three simulated hours of samples every 50 ms (216,000) on a fake clock: the histogram's
    count grows at every scrape, past the old 10,000-sample window and the 100,000-sample
    (83-minute) cap, and its buckets hold every sample."""
    metrics, registry = registered()
    lags = (0.0002, 0.003, 0.03, 0.2)  # one per bucket region, in turn
    interval, total, every = 0.05, 216_000, 6_000  # a scrape every 5 simulated minutes
    now = [0.0]
    taken = [0]
    counts: list[float] = []
    done = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        if taken[0] and taken[0] % every == 0:
            counts.append(value(registry, "streamscore_event_loop_lag_seconds_count"))
        if taken[0] == total:
            done.set()
            await asyncio.Event().wait()  # parked until stopped
        now[0] += seconds + lags[taken[0] % len(lags)]
        taken[0] += 1

    monitor = LoopLagMonitor(
        interval, metrics.lag_sample, max_samples=0, clock=lambda: now[0], sleep=fake_sleep
    )
    monitor.start()
    await asyncio.wait_for(done.wait(), timeout=120)
    await monitor.stop()

    assert now[0] > 3 * 3600
    assert counts == [float(every * n) for n in range(1, total // every + 1)]
    assert value(registry, "streamscore_event_loop_lag_seconds_count") == total
    quarter = total / 4
    assert value(registry, "streamscore_event_loop_lag_seconds_bucket", le="0.0005") == quarter
    assert value(registry, "streamscore_event_loop_lag_seconds_bucket", le="0.005") == 2 * quarter
    assert value(registry, "streamscore_event_loop_lag_seconds_bucket", le="0.05") == 3 * quarter
    assert value(registry, "streamscore_event_loop_lag_seconds_bucket", le="0.5") == total
    assert value(registry, "streamscore_event_loop_lag_last_seconds") == pytest.approx(0.2)
    assert monitor.samples == []  # a serving process keeps no raw samples
