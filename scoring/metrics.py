"""The scoring metrics both doors export: one collector, observed as things happen.

Every family is one of ``prometheus_client``'s own types, updated on the hot path at the moment
its event happens (a pipeline call, a cache lookup, a failed read, a reload, a loop-lag
sample); nothing is rebuilt at scrape time, so counters and histogram counts only grow.
:class:`ScoringMetrics` is itself a collector: a process registers it once in its own
``CollectorRegistry`` (the door's), beside the door's transport metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

CALL_EVENTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Events per pipeline call: powers of two up to past the largest batch either door makes."""
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
OUTCOMES = ("hit", "miss", "error")
RELOAD_RESULTS = ("loaded", "refused")
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""Score distributions: 0.05 wide up to 1 (a probability); anything above lands in +Inf."""
DIFFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DECISIONS = ("both_above", "both_below", "main_only", "challenger_only")
CHALLENGER_STAGES = ("load", "score")
ROLES = ("model", "challenger")
BACKENDS = ("lightgbm", "compiled")
PREFIX = "streamscore_"


# registry=None: the families belong to the collector, registered once as a whole.
def _counter(
    name: str, documentation: str, label: str | None = None, values: Iterable[str] = ()
) -> Counter:
    counter = Counter(PREFIX + name, documentation, [label] if label else [], registry=None)
    for value in values:
        counter.labels(value)  # every series exported from the start, at 0
    return counter


def _histogram(
    name: str, documentation: str, buckets: Sequence[float], label: str | None = None
) -> Histogram:
    labels = [label] if label else []
    return Histogram(PREFIX + name, documentation, labels, buckets=buckets, registry=None)


class ScoringMetrics(Collector):
    """What the scoring core counts, for whichever door runs it.

    The families and what each observes:

    ============================================  ==============================================
    ``streamscore_events_scored_total``            predictions the pipeline returned
    ``streamscore_model_calls_total``              ``Booster.predict`` calls (one per pipeline call)
    ``streamscore_pipeline_call_events``           histogram: events per pipeline call
    ``streamscore_enrich_seconds``                 histogram: stored-feature lookup per call
    ``streamscore_model_seconds``                  histogram: vectors + model + predictions per call
    ``streamscore_enrichment_total{outcome}``      scored events by ``hit``/``miss``/``error``
    ``streamscore_mongo_failures_total``           failed MongoDB reads
    ``streamscore_undecodable_documents_total``    stored documents that could not be decoded
    ``streamscore_ignored_features_total``         event features the model does not use
    ``streamscore_ignored_fields_total``           top-level event fields not in the contract
    ``streamscore_cache_lookups_total{result}``    entity cache ``hit``/``miss``
    ``streamscore_cache_evictions_total``          entries the cache dropped for room
    ``streamscore_cache_refreshes_total``          entries reloaded ahead of expiry
    ``streamscore_model_info{name,version}``       1 for the model in use
    ``streamscore_model_reloads_total{result}``    reloads ``loaded``/``refused``
    ``streamscore_model_backend{role,backend}``    1 for what executes each model's predict
                                                   (``lightgbm``/``compiled``), 0 otherwise
    ``streamscore_model_backend_fallbacks_total``  models (by ``role``) put in use scoring with
                                                   LightGBM because the compiled backend failed
    ``streamscore_event_loop_lag_seconds``         histogram: how late the loop runs a timer
    ``streamscore_event_loop_lag_last_seconds``    the latest loop-lag sample
    ``streamscore_challenger_info{name,version}``  1 for the challenger in use (none: no series)
    ``streamscore_challenger_events_total{model}`` events scored by ``main`` and by
                                                   ``challenger`` while one is attached
    ``streamscore_challenger_scores{model}``       histogram: both models' scores, same events
    ``streamscore_challenger_difference``          histogram: abs(main - challenger) per event
                                                   (mean = ``_sum`` / ``_count``)
    ``streamscore_challenger_decisions_total``     events by ``outcome`` at the threshold:
                                                   ``both_above``/``both_below`` agree,
                                                   ``main_only``/``challenger_only`` do not
    ``streamscore_challenger_failures_total``      challengers dropped, by ``stage``
                                                   (``load``/``score``)
    ``streamscore_challenger_reloads_total``       challenger reloads ``loaded``/``refused``
    ============================================  ==============================================
    """

    def __init__(self) -> None:
        self._declare_pipeline()
        self._declare_cache_and_model()
        self._declare_challenger()

    def _declare_pipeline(self) -> None:
        self.events_scored = _counter("events_scored", "Events the scoring pipeline scored")
        self.model_calls = _counter("model_calls", "Booster.predict calls")
        self.call_events = _histogram(
            "pipeline_call_events", "Events per scoring pipeline call", CALL_EVENTS_BUCKETS
        )
        self.enrich_seconds = _histogram(
            "enrich_seconds",
            "Stored-feature lookup (cache and MongoDB) per pipeline call",
            SECONDS_BUCKETS,
        )
        self.model_seconds = _histogram(
            "model_seconds",
            "Vector assembly, Booster.predict and building predictions per pipeline call",
            SECONDS_BUCKETS,
        )
        self.enrichment = _counter(
            "enrichment", "Scored events by enrichment outcome", "outcome", values=OUTCOMES
        )
        self.mongo_failures = _counter("mongo_failures", "Failed MongoDB reads")
        self.undecodable = _counter(
            "undecodable_documents",
            "Stored entity documents that could not be decoded (each scored as a miss)",
        )
        self.ignored_features = _counter(
            "ignored_features", "Event features the model does not use"
        )
        self.ignored_fields = _counter(
            "ignored_fields", "Top-level event fields that are not part of the contract"
        )

    def _declare_cache_and_model(self) -> None:
        self.cache_lookups = _counter(
            "cache_lookups", "Entity cache lookups", "result", values=("hit", "miss")
        )
        self.cache_evictions = _counter(
            "cache_evictions", "Entity cache entries dropped to stay within the size bound"
        )
        self.cache_refreshes = _counter(
            "cache_refreshes",
            "Entity cache entries reloaded ahead of expiry, by result",
            "result",
            values=("loaded", "failed"),
        )
        self.model_info = Gauge(
            f"{PREFIX}model_info", "The model in use", ["name", "version"], registry=None
        )
        self.model_reloads = _counter(
            "model_reloads", "Model reloads by result", "result", values=RELOAD_RESULTS
        )
        self.model_backend = Gauge(
            f"{PREFIX}model_backend",
            "What executes each model's predictions (1 for the backend in use)",
            ["role", "backend"],
            registry=None,
        )
        self.backend_fallbacks = _counter(
            "model_backend_fallbacks",
            "Models put in use scoring with LightGBM because the compiled backend failed",
            "role",
            values=ROLES,
        )
        self.loop_lag = _histogram(
            "event_loop_lag_seconds", "How late the event loop runs a timer", LAG_BUCKETS
        )
        self.loop_lag_last = Gauge(
            f"{PREFIX}event_loop_lag_last_seconds",
            "The latest event-loop lag sample",
            registry=None,
        )

    def _declare_challenger(self) -> None:
        self.challenger_info = Gauge(
            f"{PREFIX}challenger_info", "The challenger in use", ["name", "version"], registry=None
        )
        self.challenger_events = _counter(
            "challenger_events",
            "Events scored by each model while a challenger is attached",
            "model",
            values=("main", "challenger"),
        )
        self.challenger_scores = _histogram(
            "challenger_scores",
            "Scores of the main model and of the challenger on the same events",
            SCORE_BUCKETS,
            label="model",
        )
        self.challenger_difference = _histogram(
            "challenger_difference",
            "Absolute difference between the main and the challenger score of one event",
            DIFFERENCE_BUCKETS,
        )
        self.challenger_decisions = _counter(
            "challenger_decisions",
            "Events by the two models' decisions at the challenger threshold",
            "outcome",
            values=DECISIONS,
        )
        self.challenger_failures = _counter(
            "challenger_failures",
            "Challengers dropped, by stage (the main model kept scoring)",
            "stage",
            values=CHALLENGER_STAGES,
        )
        self.challenger_reloads = _counter(
            "challenger_reloads", "Challenger reloads by result", "result", values=RELOAD_RESULTS
        )

    def _families(self) -> Iterable[MetricWrapperBase]:
        return (value for value in vars(self).values() if isinstance(value, MetricWrapperBase))

    def collect(self) -> Iterator[Metric]:
        for family in self._families():
            yield from family.collect()

    def describe(self) -> Iterator[Metric]:
        for family in self._families():
            yield from family.describe()

    # -- observations, each called where the thing happens ---------------------------------

    def pipeline_call(
        self,
        *,
        events: int,
        outcomes: dict[str, int],
        ignored_features: int,
        enrich_s: float,
        model_s: float,
        ignored_fields: int = 0,
    ) -> None:
        """One pipeline call returned ``events`` predictions."""
        self.events_scored.inc(events)
        self.model_calls.inc()
        self.call_events.observe(events)
        self.enrich_seconds.observe(enrich_s)
        self.model_seconds.observe(model_s)
        if ignored_features:
            self.ignored_features.inc(ignored_features)
        if ignored_fields:
            self.ignored_fields.inc(ignored_fields)
        for outcome, count in outcomes.items():
            if count:
                self.enrichment.labels(outcome).inc(count)

    def model_in_use(self, name: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)

    def backend_in_use(self, role: str, backend: str | None, fell_back: bool = False) -> None:
        """The model of ``role`` now scores with ``backend`` (None: no such model, no series);
        ``fell_back``: the compiled backend was asked for and failed (counted)."""
        for name in BACKENDS:
            if backend is None:
                with contextlib.suppress(KeyError):
                    self.model_backend.remove(role, name)
            else:
                self.model_backend.labels(role, name).set(1 if name == backend else 0)
        if fell_back:
            self.backend_fallbacks.labels(role).inc()

    def model_reloaded(self, loaded: bool) -> None:
        self.model_reloads.labels("loaded" if loaded else "refused").inc()

    def challenger_in_use(self, name: str | None, version: str | None) -> None:
        """The challenger now attached (None: none, so no series)."""
        self.challenger_info.clear()
        if name is not None and version is not None:
            self.challenger_info.labels(name, version).set(1)

    def challenger_reloaded(self, loaded: bool) -> None:
        self.challenger_reloads.labels("loaded" if loaded else "refused").inc()

    def challenger_compared(
        self,
        main: npt.NDArray[np.float64],
        challenger: npt.NDArray[np.float64],
        threshold: float,
    ) -> None:
        """Both models scored the same events: counts, distributions, difference, decisions."""
        events = int(main.shape[0])
        if not events:
            return
        self.challenger_events.labels("main").inc(events)
        self.challenger_events.labels("challenger").inc(events)
        main_scores, challenger_scores = (
            self.challenger_scores.labels("main"),
            (self.challenger_scores.labels("challenger")),
        )
        for a, b in zip(main.tolist(), challenger.tolist(), strict=True):
            main_scores.observe(a)
            challenger_scores.observe(b)
            self.challenger_difference.observe(abs(a - b))
        above, other_above = main >= threshold, challenger >= threshold
        counts = {
            "both_above": int(np.count_nonzero(above & other_above)),
            "both_below": int(np.count_nonzero(~above & ~other_above)),
            "main_only": int(np.count_nonzero(above & ~other_above)),
            "challenger_only": int(np.count_nonzero(~above & other_above)),
        }
        for outcome, count in counts.items():
            if count:
                self.challenger_decisions.labels(outcome).inc(count)

    def cache_lookup(self, hits: int, misses: int) -> None:
        if hits:
            self.cache_lookups.labels("hit").inc(hits)
        if misses:
            self.cache_lookups.labels("miss").inc(misses)

    def lag_sample(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.loop_lag_last.set(seconds)

    def value(self, sample_name: str, **labels: str) -> float:
        """One sample's current value (``sample_name`` with its ``_total``/``_sum``/``_count``
        suffix), 0.0 if absent. For snapshots and tests; scrapes use :meth:`collect`."""
        for family in self.collect():
            for sample in family.samples:
                if sample.name == sample_name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0
