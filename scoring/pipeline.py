"""The one pipeline both doors use: validated events in, predictions out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import Enrichment, InputEvent, ModelRef, Prediction
from scoring.cache import EntityCache, Lookup
from scoring.errors import EnrichmentUnavailable, ScoringTimeout
from scoring.feature_store import FeatureSource, StoredFeatures
from scoring.metrics import ScoringMetrics
from scoring.model import LoadedModel
from scoring.vectors import assemble


@dataclass
class PipelineStats:
    """Running totals of this pipeline (tests and benchmarks read them; the exported metrics
    are :class:`ScoringMetrics`)."""

    batches: int = 0
    events: int = 0
    model_calls: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    enrichment_failures: int = 0
    ignored_features: int = 0
    enrich_seconds: float = 0.0
    score_seconds: float = 0.0


def _compute(
    model: LoadedModel,
    events: Sequence[InputEvent],
    stored: Lookup,
    failed: bool,
    fallback_times: Sequence[datetime | None] | None,
) -> tuple[list[Prediction], int]:
    matrix, ignored = assemble(events, stored, model.feature_names)
    scores = model.predict(matrix)
    now = datetime.now(UTC)
    ref = ModelRef(name=model.name, version=model.version)
    predictions: list[Prediction] = []
    for i, event in enumerate(events):
        if failed:
            enrichment = Enrichment.ERROR
        elif stored.get(event.entity_id) is not None:
            enrichment = Enrichment.HIT
        else:
            enrichment = Enrichment.MISS
        fallback = fallback_times[i] if fallback_times is not None else None
        predictions.append(
            Prediction(
                event_id=event.event_id,
                entity_id=event.entity_id,
                score=float(scores[i]),
                model=ref,
                enrichment=enrichment,
                event_time=event.event_time or fallback or now,
                scored_at=now,
            )
        )
    return predictions, ignored


class ScoringPipeline:
    """Enrichment (MongoDB, cached) and LightGBM scoring (in a thread executor).

    :meth:`score` guarantees:
    1. One MongoDB query per call at most, for the distinct entities the cache does not hold.
    2. One ``Booster.predict`` call per call, run in ``executor``: the event loop never runs
       the model.
    3. One prediction per event, in the events' order, all scored by one model, with stored
       features read for that model's feature names: a call whose lookup overlapped a model
       swap looks up again and is scored by the new model (swaps take effect between calls).
    4. When MongoDB cannot be read it raises :class:`EnrichmentUnavailable`, unless
       ``score_without_features_on_error`` is set; then the batch is scored on the events'
       own features and marked ``enrichment: "error"``.

    Every call is observed in ``metrics`` as it finishes (and its cache's lookups as they
    happen): pass the process's :class:`ScoringMetrics`, or the pipeline makes its own.
    """

    def __init__(
        self,
        model: LoadedModel,
        store: FeatureSource,
        executor: Executor,
        *,
        cache: EntityCache | None = None,
        score_timeout_s: float = 30.0,
        score_without_features_on_error: bool = False,
        max_concurrent_queries: int = 8,
        metrics: ScoringMetrics | None = None,
    ) -> None:
        self._model = model
        self._store = store
        self._executor = executor
        self._cache = cache
        self._score_timeout_s = score_timeout_s
        self._score_on_error = score_without_features_on_error
        self._golden: tuple[list[InputEvent], Lookup] = ([], {})
        self._queries = asyncio.Semaphore(max_concurrent_queries)
        self._generation = 0
        """Counts model swaps; a lookup is valid for the model of the generation it began in."""
        self.stats = PipelineStats()
        self.metrics = metrics if metrics is not None else ScoringMetrics()
        if cache is not None:
            cache.metrics = self.metrics
        self.metrics.model_in_use(model.name, model.version)

    @property
    def model(self) -> LoadedModel:
        return self._model

    @property
    def cache(self) -> EntityCache | None:
        return self._cache

    def swap_model(self, model: LoadedModel) -> None:
        """Make ``model`` current. Calls already running finish with the old one."""
        self._model = model
        self._generation += 1
        self.metrics.model_in_use(model.name, model.version)
        self._store.use_features(model.feature_names)
        if self._cache is not None:
            self._cache.clear()

    def golden_sample(self) -> tuple[list[InputEvent], Lookup]:
        """A few recently scored events with their stored features (to validate a new model)."""
        return self._golden

    async def ping(self) -> None:
        """Raise :class:`EnrichmentUnavailable` unless MongoDB answers."""
        await self._store.ping()

    async def _fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        async with self._queries:
            return await self._store.fetch(entity_ids)

    async def _lookup(self, entity_ids: Sequence[str]) -> Lookup:
        if self._cache is not None:
            return await self._cache.get_many(entity_ids, self._fetch)
        found: dict[str, StoredFeatures] = await self._fetch(entity_ids)
        return {entity_id: found.get(entity_id) for entity_id in entity_ids}

    async def score(
        self,
        events: Sequence[InputEvent],
        fallback_times: Sequence[datetime | None] | None = None,
    ) -> list[Prediction]:
        """Score a batch. ``fallback_times[i]`` stands in for a missing ``event_time``."""
        if not events:
            return []
        loop = asyncio.get_running_loop()
        started = loop.time()
        entity_ids = list(dict.fromkeys(event.entity_id for event in events))
        while True:
            model, generation = self._model, self._generation
            try:
                stored = await self._lookup(entity_ids)
                failed = False
            except EnrichmentUnavailable:
                self.stats.enrichment_failures += 1
                self.metrics.mongo_failures.inc()
                if not self._score_on_error:
                    raise
                stored, failed = {}, True
            if generation == self._generation:
                break  # no swap during the lookup: it was read for ``model``
        enriched = loop.time()

        sample = list(events[:16])
        self._golden = (sample, {e.entity_id: stored.get(e.entity_id) for e in sample})
        try:
            # Vector assembly, the model and building the predictions all run in the executor:
            # the event loop only waits (Booster.predict releases the GIL; the Python parts
            # yield it every switch interval).
            predictions, ignored = await asyncio.wait_for(
                loop.run_in_executor(
                    self._executor, _compute, model, events, stored, failed, fallback_times
                ),
                timeout=self._score_timeout_s,
            )
        except TimeoutError:
            raise ScoringTimeout(
                f"model {model.name}:{model.version} did not score {len(events)} events "
                f"within {self._score_timeout_s}s"
            ) from None
        scored = loop.time()
        self._record(predictions, ignored, enriched - started, scored - enriched)
        return predictions

    def _record(
        self, predictions: list[Prediction], ignored: int, enrich_s: float, model_s: float
    ) -> None:
        outcomes = dict.fromkeys(Enrichment, 0)
        for p in predictions:
            outcomes[p.enrichment] += 1
        stats = self.stats
        stats.batches += 1
        stats.model_calls += 1
        stats.events += len(predictions)
        stats.ignored_features += ignored
        stats.enrich_seconds += enrich_s
        stats.score_seconds += model_s
        stats.hits += outcomes[Enrichment.HIT]
        stats.misses += outcomes[Enrichment.MISS]
        stats.errors += outcomes[Enrichment.ERROR]
        self.metrics.pipeline_call(
            events=len(predictions),
            outcomes={str(outcome.value): count for outcome, count in outcomes.items()},
            ignored_features=ignored,
            enrich_s=enrich_s,
            model_s=model_s,
        )
