"""The scoring service: the one thing both doors start and stop.

:func:`open_scoring` opens the pipeline and everything that runs beside it in a scoring
process (the model reloader, the event-loop lag monitor, gc tuning), registers the scoring
metrics in the door's registry, and closes it all at exit. A door adds only its transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from scoring.challenger import Promotion, challenger_reloader, promote_files
from scoring.compiled import BackendChoice
from scoring.errors import ModelLoadError
from scoring.metrics import ScoringMetrics
from scoring.model import LoadedModel
from scoring.model_reload import ModelReloader, validate
from scoring.pipeline import ScoringPipeline
from scoring.resources import open_pipeline
from settings import Settings
from telemetry.gc_tuning import tune_gc
from telemetry.loop_lag import LoopLagMonitor

PipelineFactory = Callable[[Settings], AbstractAsyncContextManager[ScoringPipeline]]
"""Opens a ready pipeline (:func:`scoring.resources.open_pipeline` in production; tests pass
one over an in-memory feature source)."""


@dataclass(frozen=True)
class ScoringSnapshot:
    """The scoring counters at one moment, as exported (what benchmarks and reports read)."""

    model_name: str
    model_version: str
    events_scored: int
    pipeline_calls: int
    enrich_seconds: float
    model_seconds: float
    enrichment_hits: int
    enrichment_misses: int
    enrichment_errors: int
    mongo_failures: int
    undecodable_documents: int
    ignored_features: int
    ignored_fields: int
    cache_entries: int | None
    """Entries held now; None when the cache is off."""
    cache_hits: int
    cache_misses: int
    cache_loads: int
    cache_evictions: int
    reloads_loaded: int
    reloads_refused: int
    loop_lag_last_s: float


@dataclass(frozen=True)
class ScoringService:
    """A running scoring core: the pipeline and what runs beside it, sharing one collector."""

    pipeline: ScoringPipeline
    reloader: ModelReloader
    loop_lag: LoopLagMonitor
    metrics: ScoringMetrics
    registry: CollectorRegistry
    """The process's registry: the scoring metrics are in it; the door adds its own."""
    challenger: ModelReloader | None = None
    """The challenger's reloader; None when no challenger is configured."""
    settings: Settings | None = None
    _promoting: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def promote(self) -> Promotion:
        """Make the challenger the main model (``POST /admin/promote-challenger``).

        1. The challenger must pass the main model's validation in this process (feature
           names it can fill, finite scores on the golden sample), and so must the main
           model's file, which becomes the challenger; else :class:`ModelLoadError` and
           nothing changes.
        2. The files are swapped atomically (:func:`scoring.challenger.promote_files`), so
           every scorer and sidecar on these files picks the new main model up; this process
           reloads both models at once. One promotion at a time.
        """
        settings, reloader = self.settings, self.challenger
        challenger_path = settings.challenger.path if settings is not None else None
        if settings is None or reloader is None or challenger_path is None:
            raise ModelLoadError("no challenger is configured")
        main_path, threads = settings.model.path, settings.model.threads

        def check(candidate: LoadedModel) -> None:
            validate(candidate, self.pipeline)

        async with self._promoting:
            loop = asyncio.get_running_loop()
            promotion = await loop.run_in_executor(
                None,
                lambda: promote_files(
                    main_path, challenger_path, threads=threads, check=check, check_demoted=check
                ),
            )
            # The files are swapped: what follows cannot undo that, so a refusal here is
            # logged and counted by its reloader, and its next look tries the files again,
            # not reported as "nothing changed".
            for swapped in (self.reloader, reloader):
                try:
                    await swapped.reload()
                except ModelLoadError:
                    swapped.look_again()
            return promotion

    async def reload_models(self) -> LoadedModel:
        """SIGHUP and ``POST /admin/reload-model``: read the main model's file now, then the
        challenger's (after ``streamscore promote`` both changed). A refused challenger is
        logged and counted by its reloader; a refused main model raises
        :class:`ModelLoadError` once the challenger has been looked at too."""
        refused: ModelLoadError | None = None
        try:
            model = await self.reloader.reload()
        except ModelLoadError as exc:
            refused, model = exc, self.pipeline.model
        if self.challenger is not None:
            with contextlib.suppress(ModelLoadError):
                await self.challenger.reload()
        if refused is not None:
            raise refused
        return model

    def snapshot(self) -> ScoringSnapshot:
        m, cache = self.metrics, self.pipeline.cache
        model = self.pipeline.model

        def count(name: str, **labels: str) -> int:
            return int(m.value(name, **labels))

        return ScoringSnapshot(
            model_name=model.name,
            model_version=model.version,
            events_scored=count("streamscore_events_scored_total"),
            pipeline_calls=count("streamscore_model_calls_total"),
            enrich_seconds=m.value("streamscore_enrich_seconds_sum"),
            model_seconds=m.value("streamscore_model_seconds_sum"),
            enrichment_hits=count("streamscore_enrichment_total", outcome="hit"),
            enrichment_misses=count("streamscore_enrichment_total", outcome="miss"),
            enrichment_errors=count("streamscore_enrichment_total", outcome="error"),
            mongo_failures=count("streamscore_mongo_failures_total"),
            undecodable_documents=count("streamscore_undecodable_documents_total"),
            ignored_features=count("streamscore_ignored_features_total"),
            ignored_fields=count("streamscore_ignored_fields_total"),
            cache_entries=len(cache) if cache is not None else None,
            cache_hits=count("streamscore_cache_lookups_total", result="hit"),
            cache_misses=count("streamscore_cache_lookups_total", result="miss"),
            cache_loads=cache.stats.loads if cache is not None else 0,
            cache_evictions=count("streamscore_cache_evictions_total"),
            reloads_loaded=count("streamscore_model_reloads_total", result="loaded"),
            reloads_refused=count("streamscore_model_reloads_total", result="refused"),
            loop_lag_last_s=self.loop_lag.last_s,
        )


SIDECAR_SWITCH_INTERVAL_MS = 0.5
STREAM_SWITCH_INTERVAL_MS = 0.2
"""The GIL switch interval of each door when ``STREAMSCORE_SCORING__SWITCH_INTERVAL_MS`` is
unset (the measured best of each: README, configuration)."""


@asynccontextmanager
async def open_scoring(
    settings: Settings,
    *,
    pipeline_factory: PipelineFactory = open_pipeline,
    registry: CollectorRegistry | None = None,
    switch_interval_ms: float = SIDECAR_SWITCH_INTERVAL_MS,
) -> AsyncIterator[ScoringService]:
    """Open the scoring core for one process; close it at exit.

    This guarantees:
    1. The pipeline is open (model loaded, MongoDB client and executor created) before
       anything else starts; a bad model fails here, before the door serves.
    2. The pipeline's metrics are registered once in ``registry`` (a new one when none is
       given; either way ``service.registry``) and unregistered at exit.
    3. The model reloader polls ``STREAMSCORE_MODEL__RELOAD_INTERVAL_S`` (0: only on demand),
       the loop-lag monitor samples into the metrics, and gc is tuned once, after startup.
       With ``STREAMSCORE_CHALLENGER__PATH`` the challenger is attached (or, when it cannot
       be, the main model scores alone) and has its own reloader on the same interval.
    4. At exit the reloader and the monitor stop before the pipeline closes, so no reload or
       sample outlives the pipeline it observes.
    5. While open, the GIL switch interval is ``STREAMSCORE_SCORING__SWITCH_INTERVAL_MS``, or
       when unset the door's ``switch_interval_ms``; Python's own is restored at exit.
    """
    registry = registry if registry is not None else CollectorRegistry()
    async with pipeline_factory(settings) as pipeline:
        metrics = pipeline.metrics
        registry.register(metrics)
        reloader = ModelReloader(
            settings.model.path,
            pipeline,
            threads=settings.model.threads,
            interval_s=settings.model.reload_interval_s,
            backend=BackendChoice.of(settings.model),
        )
        challenger = await challenger_reloader(settings, pipeline)
        loop_lag = LoopLagMonitor(on_sample=metrics.lag_sample, max_samples=0)
        switch_interval = sys.getswitchinterval()
        try:
            reloader.start()
            if challenger is not None:
                challenger.start()
            loop_lag.start()
            tune_gc()
            chosen = settings.scoring.switch_interval_ms
            sys.setswitchinterval((chosen or switch_interval_ms) / 1000)
            yield ScoringService(
                pipeline, reloader, loop_lag, metrics, registry, challenger, settings
            )
        finally:
            sys.setswitchinterval(switch_interval)
            await loop_lag.stop()
            if challenger is not None:
                await challenger.stop()
            await reloader.stop()
            registry.unregister(metrics)
