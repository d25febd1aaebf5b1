"""The scoring pipeline: offline-equal scores, one model call per batch, executor, errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from schemas import Enrichment, InputEvent
from scoring import EnrichmentUnavailable, EntityCache, LoadedModel, ScoringPipeline
from scoring.vectors import assemble
from tests.support.helpers import MemoryFeatures

STORED = {"user-1": {"account_age_days": 30.0, "avg_amount_30d": 20.0, "country_risk": 0.9}}


def events() -> list[InputEvent]:
    return [
        InputEvent(event_id="e1", entity_id="user-1", features={"amount": 500.0, "hour": 2}),
        InputEvent(event_id="e2", entity_id="user-2", features={"amount": 10.0}),
        InputEvent.model_validate(
            {"event_id": "e3", "entity_id": "user-1", "features": {"amount": 5.0, "other": 1}}
            | {"source": "checkout", "trace": {"id": 7}}  # extra top-level fields
        ),
    ]


def pipeline(model: LoadedModel, source: MemoryFeatures, **kw: object) -> ScoringPipeline:
    return ScoringPipeline(
        model,
        source,
        ThreadPoolExecutor(2),
        cache=EntityCache(100, 60),
        **kw,  # type: ignore[arg-type]
    )


async def test_scores_equal_offline_predict_and_enrichment_is_right(model: LoadedModel) -> None:
    source = MemoryFeatures(STORED)
    scorer = pipeline(model, source)
    batch = events()
    predictions = await scorer.score(batch)

    matrix = np.full((3, len(model.feature_names)), np.nan)
    col = {n: i for i, n in enumerate(model.feature_names)}
    for i, e in enumerate(batch):
        for name, stored in STORED.get(e.entity_id, {}).items():
            matrix[i, col[name]] = stored
        for name, given in e.features.items():
            if name in col and given is not None:
                matrix[i, col[name]] = given
    offline = model.booster.predict(matrix)

    assert [p.event_id for p in predictions] == ["e1", "e2", "e3"]
    assert [p.score for p in predictions] == [float(s) for s in offline]
    assert [p.enrichment for p in predictions] == [Enrichment.HIT, Enrichment.MISS, Enrichment.HIT]
    assert predictions[0].model.name == model.name
    assert predictions[0].model.version == model.version
    assert source.calls == [["user-1", "user-2"]]
    assert scorer.stats.model_calls == 1
    assert scorer.stats.ignored_features == 1
    assert scorer.stats.ignored_fields == 2


async def test_model_runs_in_the_executor_not_on_the_loop(model: LoadedModel) -> None:
    threads: list[str] = []

    def spy(matrix: Any) -> Any:
        threads.append(threading.current_thread().name)
        return LoadedModel.predict(model, matrix)

    spied = replace(model)
    object.__setattr__(spied, "predict", spy)
    await pipeline(spied, MemoryFeatures(STORED)).score(events())
    assert threads
    assert threads[0] != threading.current_thread().name


async def test_enrichment_outage_raises_by_default(model: LoadedModel) -> None:
    with pytest.raises(EnrichmentUnavailable):
        await pipeline(model, MemoryFeatures(STORED, failures=1)).score(events())


async def test_opt_in_scores_without_stored_features(model: LoadedModel) -> None:
    scorer = pipeline(
        model, MemoryFeatures(STORED, failures=1), score_without_features_on_error=True
    )
    predictions = await scorer.score(events())
    assert {p.enrichment for p in predictions} == {Enrichment.ERROR}
    matrix, _ = assemble(events(), {}, model.feature_names)
    assert [p.score for p in predictions] == [float(s) for s in model.booster.predict(matrix)]


async def test_missing_event_time_uses_fallback(model: LoadedModel) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 1, tzinfo=UTC)
    predictions = await pipeline(model, MemoryFeatures({})).score(events()[:1], [when])
    assert predictions[0].event_time == when


async def test_concurrent_batches_share_a_bounded_number_of_queries(model: LoadedModel) -> None:
    import asyncio

    class SlowSource(MemoryFeatures):
        def __init__(self) -> None:
            super().__init__({})
            self.running = 0
            self.peak = 0

        async def fetch(self, entity_ids: Any) -> Any:
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.02)
            self.running -= 1
            return await super().fetch(entity_ids)

    source = SlowSource()
    scorer = pipeline(model, source, max_concurrent_queries=2)
    batches = [
        [InputEvent(event_id=f"e{i}", entity_id=f"u{i}", features={"amount": 1.0})]
        for i in range(10)
    ]
    results = await asyncio.gather(*(scorer.score(b) for b in batches))
    assert [r[0].event_id for r in results] == [f"e{i}" for i in range(10)]
    assert len(source.calls) == 10
    assert source.peak == 2


async def test_a_swap_during_the_lookup_scores_the_batch_with_the_new_models_features(
    model: LoadedModel,
) -> None:
    """The store projects to the current model's features; a lookup that overlapped a swap
    was read for the old model, so the batch is looked up again and scored by the new one."""
    import asyncio

    class ProjectingSource(MemoryFeatures):
        def __init__(self) -> None:
            super().__init__(STORED)
            self.names: tuple[str, ...] = tuple(model.feature_names)
            self.release = asyncio.Event()

        async def fetch(self, entity_ids: Any) -> Any:
            names = self.names  # the projection in force when the query started
            if len(self.calls) == 0:
                self.calls.append(list(entity_ids))
                await self.release.wait()
            else:
                self.calls.append(list(entity_ids))
            return {
                i: {k: v for k, v in self.documents[i].items() if k in names}
                for i in entity_ids
                if i in self.documents
            }

        def use_features(self, feature_names: Any) -> None:
            self.names = tuple(feature_names)

    source = ProjectingSource()
    scorer = pipeline(model, source)
    # The new model version uses the same names; the old projection is made to drop a stored
    # feature, so a result read for the old model would score differently.
    source.names = tuple(n for n in model.feature_names if n != "country_risk")
    new = replace(model, version="2")
    batch = asyncio.create_task(scorer.score(events()[:1]))
    await asyncio.sleep(0.01)
    scorer.swap_model(new)
    source.release.set()
    predictions = await batch
    assert len(source.calls) == 2  # looked up again after the swap
    assert predictions[0].model.version == "2"
    matrix, _ = assemble(events()[:1], {"user-1": STORED["user-1"]}, model.feature_names)
    assert predictions[0].score == float(model.booster.predict(matrix)[0])
    # Nothing fetched for the old projection was kept in the cache.
    again = await scorer.score(events()[:1])
    assert again[0].score == predictions[0].score


async def test_every_call_is_observed_in_the_pipelines_metrics(model: LoadedModel) -> None:
    source = MemoryFeatures(STORED, failures=1)
    scorer = pipeline(model, source, score_without_features_on_error=True)
    metrics = scorer.metrics

    await scorer.score(events())  # MongoDB fails once: scored as "error"
    await scorer.score(events()[:2])
    await scorer.score([])  # nothing to score: no call

    assert metrics.value("streamscore_model_calls_total") == 2
    assert metrics.value("streamscore_events_scored_total") == 5
    assert metrics.value("streamscore_pipeline_call_events_count") == 2
    assert metrics.value("streamscore_pipeline_call_events_sum") == 5
    assert metrics.value("streamscore_enrichment_total", outcome="error") == 3
    assert metrics.value("streamscore_enrichment_total", outcome="hit") == 1
    assert metrics.value("streamscore_enrichment_total", outcome="miss") == 1
    assert metrics.value("streamscore_mongo_failures_total") == 1
    assert metrics.value("streamscore_ignored_features_total") == 1
    assert metrics.value("streamscore_ignored_fields_total") == 2  # e3's, in the first call
    assert metrics.value("streamscore_enrich_seconds_count") == 2
    assert metrics.value("streamscore_model_seconds_count") == 2
    assert metrics.value("streamscore_cache_lookups_total", result="miss") == 4
    assert metrics.value("streamscore_model_info", name=model.name, version=model.version) == 1
    assert (scorer.stats.model_calls, scorer.stats.events, scorer.stats.errors) == (2, 5, 3)
