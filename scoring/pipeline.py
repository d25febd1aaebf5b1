"""The one pipeline both doors use: validated events in, predictions out."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from schemas import Enrichment, InputEvent, Prediction
from scoring.cache import EntityCache, Lookup
from scoring.compute import Shadow, compute
from scoring.errors import EnrichmentUnavailable, ScoringTimeout
from scoring.feature_store import FeatureSource, StoredFeatures
from scoring.metrics import ScoringMetrics
from scoring.model import LoadedModel
from scoring.reasons import ReasonPolicy
from scoring.rows import PredictionRows

log = logging.getLogger(__name__)


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
    ignored_fields: int = 0
    enrich_seconds: float = 0.0
    score_seconds: float = 0.0


@dataclass(frozen=True)
class Scored:
    """One pipeline call's result: the main predictions and, aligned with them, the
    challenger's (None when no challenger scored this call)."""

    main: PredictionRows | None
    shadow: PredictionRows | None = None

    @property
    def predictions(self) -> list[Prediction]:
        return self.main.predictions if self.main is not None else []

    @property
    def challenger(self) -> list[Prediction]:
        return self.shadow.predictions if self.shadow is not None else []


def union(*names: Sequence[str]) -> list[str]:
    """Feature names of several models, each once, in first-seen order."""
    return list(dict.fromkeys(name for group in names for name in group))


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
    5. With a challenger attached (:meth:`swap_challenger`), :meth:`score_all` also scores
       every event with it, on the same lookup and in the same executor call; stored features
       are read for both models' feature names. A challenger that raises is dropped (logged,
       ``streamscore_challenger_failures_total{stage="score"}``) and the main predictions of
       that call are returned as if it had never been there.

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
        reasons: ReasonPolicy | None = None,
        challenger_threshold: float = 0.5,
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
        self._challenger: LoadedModel | None = None
        self._threshold = challenger_threshold
        self._reasons = reasons if reasons is not None and reasons.enabled else None
        self.stats = PipelineStats()
        self.metrics = metrics if metrics is not None else ScoringMetrics()
        if cache is not None:
            cache.metrics = self.metrics
        self.metrics.model_in_use(model.name, model.version)
        self.metrics.backend_in_use("model", model.backend, model.backend_error is not None)

    @property
    def model(self) -> LoadedModel:
        return self._model

    @property
    def challenger(self) -> LoadedModel | None:
        return self._challenger

    @property
    def cache(self) -> EntityCache | None:
        return self._cache

    def swap_model(self, model: LoadedModel) -> None:
        """Make ``model`` current. Calls already running finish with the old one."""
        self._model = model
        self._generation += 1
        self.metrics.model_in_use(model.name, model.version)
        self.metrics.backend_in_use("model", model.backend, model.backend_error is not None)
        self._use_features()
        if self._cache is not None:
            self._cache.clear()

    def swap_challenger(self, challenger: LoadedModel | None) -> None:
        """Attach ``challenger`` (None: detach). Calls already running finish as they began.

        When the challenger needs stored features the main model does not, the feature store
        reads both sets from now on and the cache (which holds only what was read) is cleared.
        """
        before = set(self._feature_names())
        self._challenger = challenger
        self._generation += 1
        if challenger is None:
            self.metrics.challenger_in_use(None, None)
            self.metrics.backend_in_use("challenger", None)
        else:
            self.metrics.challenger_in_use(challenger.name, challenger.version)
            self.metrics.backend_in_use(
                "challenger", challenger.backend, challenger.backend_error is not None
            )
        self._use_features()
        if self._cache is not None and not set(self._feature_names()) <= before:
            self._cache.clear()

    def _feature_names(self) -> list[str]:
        challenger = self._challenger.feature_names if self._challenger is not None else ()
        return union(self._model.feature_names, challenger)

    def _use_features(self) -> None:
        self._store.use_features(self._feature_names())

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
        return (await self.score_all(events, fallback_times)).predictions

    async def score_all(
        self,
        events: Sequence[InputEvent],
        fallback_times: Sequence[datetime | None] | None = None,
        *,
        eager: bool = True,
    ) -> Scored:
        """Score a batch with the main model and the challenger, if one is attached.

        With ``eager`` (the sidecar) the :class:`Prediction` objects are built in the
        executor; without (the stream, which needs only their JSON), never."""
        if not events:
            return Scored(None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        entity_ids = list(dict.fromkeys([event.entity_id for event in events]))
        while True:
            model, challenger, generation = self._model, self._challenger, self._generation
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
        shadow = Shadow(challenger, self.metrics, self._threshold) if challenger else None
        try:
            # Vector assembly, the model(s), reasons and building the predictions all run in
            # the executor: the event loop only waits (Booster.predict releases the GIL; the
            # Python parts yield it every switch interval).
            computed = await asyncio.wait_for(
                loop.run_in_executor(
                    self._executor,
                    compute,
                    model,
                    events,
                    stored,
                    failed,
                    fallback_times,
                    self._reasons,
                    shadow,
                    eager,
                ),
                timeout=self._score_timeout_s,
            )
        except TimeoutError:
            raise ScoringTimeout(
                f"model {model.name}:{model.version} did not score {len(events)} events "
                f"within {self._score_timeout_s}s"
            ) from None
        scored = loop.time()
        predictions = computed.predictions
        if challenger is not None and computed.challenger is None:
            self.metrics.challenger_events.labels("main").inc(len(events))
            self._drop_challenger(challenger, computed.challenger_error)
        self._record(
            predictions.enrichment,
            (computed.ignored, computed.ignored_fields),
            enriched - started,
            scored - enriched,
        )
        return Scored(predictions, computed.challenger)

    def _drop_challenger(self, challenger: LoadedModel, error: Exception | None) -> None:
        """The challenger failed while scoring: detach it (unless already replaced)."""
        self.metrics.challenger_failures.labels("score").inc()
        log.error(
            "challenger %s:%s dropped: it failed while scoring: %r",
            challenger.name,
            challenger.version,
            error,
            extra={"event": "challenger_dropped", "stage": "score", "version": challenger.version},
        )
        if self._challenger is challenger:
            self.swap_challenger(None)

    def _record(
        self,
        enrichment: Sequence[Enrichment],
        ignored: tuple[int, int],
        enrich_s: float,
        model_s: float,
    ) -> None:
        """Count one call; ``ignored``: (unused feature names, extra top-level fields)."""
        outcomes = dict.fromkeys(Enrichment, 0)
        outcomes.update(Counter(enrichment))  # counted in C: this runs on the event loop
        stats = self.stats
        stats.batches += 1
        stats.model_calls += 1
        stats.events += len(enrichment)
        stats.ignored_features += ignored[0]
        stats.ignored_fields += ignored[1]
        stats.enrich_seconds += enrich_s
        stats.score_seconds += model_s
        stats.hits += outcomes[Enrichment.HIT]
        stats.misses += outcomes[Enrichment.MISS]
        stats.errors += outcomes[Enrichment.ERROR]
        self.metrics.pipeline_call(
            events=len(enrichment),
            outcomes={str(outcome.value): count for outcome, count in outcomes.items()},
            ignored_features=ignored[0],
            ignored_fields=ignored[1],
            enrich_s=enrich_s,
            model_s=model_s,
        )
