"""Creating and closing what a pipeline needs: model, MongoDB client, executor, cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient

from scoring.cache import EntityCache
from scoring.compiled import BackendChoice
from scoring.feature_store import EntityFeatureStore
from scoring.metrics import ScoringMetrics
from scoring.model import load_model
from scoring.pipeline import ScoringPipeline
from scoring.reasons import ReasonPolicy
from settings import MongoSettings, Settings


def mongo_client(mongo: MongoSettings) -> AsyncMongoClient[dict[str, Any]]:
    """An async client with every timeout set (the driver's defaults wait 30 s or forever)."""
    return AsyncMongoClient(
        mongo.url.get_secret_value(),
        serverSelectionTimeoutMS=mongo.server_selection_timeout_ms,
        connectTimeoutMS=mongo.connect_timeout_ms,
        timeoutMS=mongo.operation_timeout_ms,
        maxPoolSize=mongo.max_pool_size,
        appname="streamscore",
    )


@asynccontextmanager
async def open_pipeline(
    settings: Settings, metrics: ScoringMetrics | None = None
) -> AsyncIterator[ScoringPipeline]:
    """Yield a ready pipeline; close its client and executor on exit.

    The model is loaded before anything connects, so a bad model path fails fast; it loads
    (and, with ``STREAMSCORE_MODEL__BACKEND=compiled``, compiles) in a worker thread. The
    pipeline, its cache and its feature store all observe into ``metrics`` (a new
    :class:`ScoringMetrics` when none is given; it is ``pipeline.metrics``).
    """
    metrics = metrics if metrics is not None else ScoringMetrics()
    model = await asyncio.to_thread(
        load_model,
        settings.model.path,
        threads=settings.model.threads,
        backend=BackendChoice.of(settings.model),
    )
    client = mongo_client(settings.mongo)
    executor = ThreadPoolExecutor(
        max_workers=settings.scoring.executor_threads, thread_name_prefix="streamscore-score"
    )
    try:
        collection = client[settings.mongo.database][settings.mongo.collection]
        cache = (
            EntityCache(
                settings.scoring.cache_max_entries,
                settings.scoring.cache_ttl_s,
                refresh_ahead=settings.scoring.cache_refresh_ahead,
            )
            if settings.scoring.cache_enabled
            else None
        )
        yield ScoringPipeline(
            model,
            EntityFeatureStore(collection, model.feature_names, metrics),
            executor,
            cache=cache,
            score_timeout_s=settings.scoring.score_timeout_s,
            score_without_features_on_error=settings.scoring.score_without_features_on_error,
            max_concurrent_queries=settings.scoring.max_concurrent_queries,
            metrics=metrics,
            reasons=ReasonPolicy(settings.model.reasons, settings.model.reasons_min_score),
            challenger_threshold=settings.challenger.threshold,
        )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        await client.close()
