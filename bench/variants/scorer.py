"""streamscore: the real scorer, ``streams.app.build_app`` with ``scoring.resources
.open_pipeline``, configured like ``streamscore run`` from the ``STREAMSCORE_*`` variables.

The only additions: the reporter's loop-lag monitor on the same loop, a pipeline factory that
wraps ``open_pipeline`` unchanged (to keep a handle on the pipeline and, for the warm pass,
fill its entity cache before consuming), and a reader of public counters.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient

from bench.protocol import ScorerCounters, emit
from bench.variants.naive import subscriber_assignment
from bench.variants.reporter import Reporter
from scoring import ScoringPipeline
from scoring.feature_store import EntityFeatureStore
from scoring.resources import open_pipeline
from settings import Settings
from streams.app import build_app
from streams.metrics import STAGES
from streams.runtime import StreamRuntime
from telemetry import logs


async def preload(settings: Settings, pipeline: ScoringPipeline, ids: list[str]) -> None:
    """Fill the pipeline's own entity cache with ``ids`` (the warm pass), through the cache's
    public ``get_many`` and the product's ``EntityFeatureStore``, on a client whose timeout
    allows FerretDB's slow ``$in`` (the product's 2 s would not)."""
    cache = pipeline.cache
    if cache is None or not ids:
        return
    started = time.monotonic()
    cache.clear()  # reloaded entries get a fresh TTL
    mongo = settings.mongo
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo.url.get_secret_value(), timeoutMS=300_000
    )
    try:
        store = EntityFeatureStore(
            client[mongo.database][mongo.collection], pipeline.model.feature_names
        )
        # chunks of 5,000: mongo-java-server takes ~20 s for one $in of 25,000 ids, and FerretDB
        # scans the collection once per $in (~1.4 s), so neither many small nor one huge query
        for i in range(0, len(ids), 5_000):
            await cache.get_many(ids[i : i + 5_000], store.fetch)
    finally:
        await client.close()
    emit("preloaded", entries=len(cache), seconds=round(time.monotonic() - started, 2))


def counters(runtime: StreamRuntime, pipeline: ScoringPipeline | None) -> ScorerCounters | None:
    processor = runtime.processor
    if processor is None or pipeline is None:
        return None
    s, p, cache = processor.stats, pipeline.stats, pipeline.cache
    return ScorerCounters(
        consumed=s.consumed,
        scored=s.scored + sum(s.dead_lettered.values()),
        commits=s.commits,
        retries=s.retries,
        batches=p.batches,
        events=p.events,
        enrich_s=round(p.enrich_seconds, 4),
        score_s=round(p.score_seconds, 4),
        cache_hits=cache.stats.hits if cache is not None else 0,
        cache_misses=cache.stats.misses if cache is not None else 0,
        cache_size=len(cache) if cache is not None else 0,
        stage_s={k: round(v, 4) for k, v in stage_sums(runtime).items()},
    )


def stage_sums(runtime: StreamRuntime) -> dict[str, float]:
    """Seconds spent per stage so far, from the stage histogram alone: this runs on the
    scorer's loop every tick, and collecting the whole registry (once per stage, as
    ``get_sample_value`` does) held the loop for milliseconds, inside the loop lag measured."""
    sums = dict.fromkeys(STAGES, 0.0)
    for metric in runtime.metrics.stage_seconds.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum") and sample.labels.get("stage") in sums:
                sums[sample.labels["stage"]] = sample.value
    return sums


async def run_scorer(settings: Settings, rep: Reporter, ids: list[str]) -> None:
    logs.configure(settings.log_level)
    opened: list[ScoringPipeline] = []
    background: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def factory(s: Settings) -> AsyncIterator[ScoringPipeline]:
        async with open_pipeline(s) as pipeline:
            opened.append(pipeline)
            await preload(s, pipeline, ids)  # before the subscriber consumes
            yield pipeline

    def on_usr1() -> None:
        if opened:
            task = asyncio.get_running_loop().create_task(preload(settings, opened[-1], ids))
            background.add(task)
            task.add_done_callback(background.discard)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_usr1)
    app, broker, runtime = build_app(settings, pipeline_factory=factory)

    def assigned() -> int:
        # the runtime learns its consumer with the first batch; the bench needs the assignment
        # before that (the process waits at the end of the input), so ask FastStream's one
        # subscriber, once the runtime has started
        return subscriber_assignment(broker) if runtime.processor is not None else 0

    rep.assigned = assigned
    rep.counters = lambda: counters(runtime, opened[-1] if opened else None)
    await app.run()
