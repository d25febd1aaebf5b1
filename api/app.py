"""The FastAPI sidecar, built on the same :class:`ScoringPipeline` as the stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.batching import MicroBatcher, Overloaded
from api.guard import Guard, too_large, unavailable
from api.metrics import ApiMetrics
from api.parsing import InvalidBody, Limits, parse_body
from api.requests import ErrorBody, PredictEvent, error_body
from schemas import InputEvent, Prediction
from scoring import EnrichmentUnavailable, ModelLoadError, ScoringPipeline, ScoringTimeout
from scoring.loop_lag import LoopLagMonitor, tune_gc
from scoring.model_reload import ModelReloader
from scoring.resources import open_pipeline
from settings import Settings

PipelineFactory = Callable[[Settings], AbstractAsyncContextManager[ScoringPipeline]]
log = logging.getLogger(__name__)
LARGE_BODIES_AT_ONCE = 2
"""Large bodies parsed or waiting for the parser thread; one more is a 503 at once."""


class _Throttled:
    """Logs one line per ``every_s`` at most: an outage must not flood the log per request."""

    def __init__(self, every_s: float = 5.0) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._every_s) >= self._every_s:
            self._last[kind] = now
            log.warning(message, *args, extra={"event": kind})


def create_app(settings: Settings, pipeline_factory: PipelineFactory = open_pipeline) -> FastAPI:
    api = settings.api
    metrics = ApiMetrics()
    state: dict[str, Any] = {}
    known_paths: set[str] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with pipeline_factory(settings) as pipeline:
            metrics.watch(pipeline)

            async def score(events: Sequence[InputEvent]) -> list[Prediction]:
                metrics.batch_size.observe(len(events))
                return await pipeline.score(events)

            # With batching off every request is its own pipeline call (max_size 1), under the
            # same bound on queued events.
            batcher = MicroBatcher(
                score,
                api.batch_max_size if api.batching_enabled else 1,
                api.batch_max_wait_ms / 1000,
                max_queued=api.max_queued_events,
            )
            metrics.queued_events.set_function(lambda: batcher.queued)
            # One thread: json.loads and pydantic hold the GIL for a whole large body (~20 ms
            # per 1 MB), so each extra parser thread is one more the loop waits behind.
            parse_pool = ThreadPoolExecutor(1, thread_name_prefix="streamscore-parse")
            monitor = LoopLagMonitor(on_sample=metrics.lag_sample)
            monitor.start()
            tune_gc()
            reloader = ModelReloader(
                settings.model.path,
                pipeline,
                threads=settings.model.threads,
                interval_s=settings.model.reload_interval_s,
            )
            reloader.start()
            metrics.watch_reloads(reloader)
            state.update(
                pipeline=pipeline,
                batcher=batcher,
                parse_pool=parse_pool,
                reloader=reloader,
                started=time.time(),
            )
            try:
                yield
            finally:
                await batcher.close()
                await monitor.stop()
                await reloader.stop()
                parse_pool.shutdown(wait=False, cancel_futures=True)
                state.clear()

    app = FastAPI(
        title="streamscore sidecar",
        version="0.1.0",
        summary="Request/response scoring with the same enrichment and model as the stream.",
        lifespan=lifespan,
    )

    app.add_middleware(
        Guard,
        metrics=metrics,
        api_key=api.api_key,
        max_body_bytes=api.max_body_bytes,
        max_in_flight=api.max_in_flight,
        retry_after_s=api.retry_after_s,
        known_paths=known_paths,
    )
    parsing = [0]  # large bodies being parsed or waiting for the parser thread
    limits = Limits(api.max_events_per_request, api.max_features_per_event, api.max_errors_reported)
    throttled = _Throttled()

    errors = {
        401: {"model": ErrorBody, "description": "Missing or wrong API key"},
        413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
        415: {"model": ErrorBody, "description": "Content-Type is not application/json"},
        422: {
            "model": ErrorBody,
            "description": "Invalid input; `errors` names the first fields, `error_count` counts",
        },
        503: {
            "model": ErrorBody,
            "description": "MongoDB unavailable, overloaded or past the deadline; see Retry-After",
        },
    }

    @app.post(
        "/predict",
        response_model=Prediction | list[Prediction],
        responses=errors,  # type: ignore[arg-type]
        summary="Score one event or a list of events",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/PredictEvent"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/PredictEvent"},
                                    "minItems": 1,
                                    "maxItems": api.max_events_per_request,
                                },
                            ]
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request) -> Any:
        try:
            async with asyncio.timeout(api.request_timeout_s):
                return await _predict(request)
        except TimeoutError:
            metrics.shed.labels("deadline").inc()
            return unavailable("scoring took too long: try again later", api.retry_after_s)

    async def _predict(request: Request) -> Any:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > api.max_body_bytes:
                return too_large(api.max_body_bytes)
        try:
            if len(body) >= api.parse_in_thread_bytes:
                if parsing[0] >= LARGE_BODIES_AT_ONCE:
                    metrics.shed.labels("parse").inc()
                    return unavailable("overloaded: try again later", api.retry_after_s)
                parsing[0] += 1
                try:
                    loop = asyncio.get_running_loop()
                    events, many = await loop.run_in_executor(
                        state["parse_pool"], parse_body, bytes(body), limits
                    )
                finally:
                    parsing[0] -= 1
            else:
                events, many = parse_body(bytes(body), limits)
        except InvalidBody as exc:
            return JSONResponse(error_body(exc.detail, exc.errors, exc.count), status_code=422)
        try:
            predictions = await state["batcher"].submit(events)
        except Overloaded:
            metrics.shed.labels("queue").inc()
            return unavailable("overloaded: try again later", api.retry_after_s)
        except EnrichmentUnavailable as exc:
            throttled.warning("enrichment_unavailable", "predict: MongoDB unavailable: %s", exc)
            return unavailable("MongoDB unavailable", api.retry_after_s)
        except ScoringTimeout as exc:
            throttled.warning("scoring_timeout", "predict: %s", exc)
            return unavailable("scoring timed out", api.retry_after_s)
        # Serialise once here; FastAPI would otherwise validate the models again.
        if many:
            body_out = b"[" + b",".join(p.model_dump_json().encode() for p in predictions) + b"]"
        else:
            body_out = predictions[0].model_dump_json().encode()
        return Response(body_out, media_type="application/json")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: model loaded and MongoDB answering",
        responses={503: {"model": ErrorBody}},
    )
    async def readyz() -> Any:
        pipeline: ScoringPipeline | None = state.get("pipeline")
        if pipeline is None:
            return JSONResponse(error_body("not ready: the model is not loaded"), status_code=503)
        try:
            await asyncio.wait_for(
                pipeline.ping(), timeout=settings.mongo.server_selection_timeout_ms / 1000 + 1
            )
        except (EnrichmentUnavailable, TimeoutError) as exc:
            throttled.warning("not_ready", "readyz: MongoDB is not answering: %r", exc)
            return unavailable("not ready: MongoDB unavailable", api.retry_after_s)
        return {"status": "ready", "model": f"{pipeline.model.name}:{pipeline.model.version}"}

    @app.get("/model", summary="The model in use")
    async def model_info() -> dict[str, Any]:
        model = state["pipeline"].model
        return {
            "name": model.name,
            "version": model.version,
            "feature_names": list(model.feature_names),
            "loaded_at": model.loaded_at.astimezone(UTC).isoformat(),
        }

    @app.post(
        "/admin/reload-model",
        summary="Load the model file now (validated; the old model keeps serving if refused). "
        "Served only when an API key is configured.",
        responses={
            409: {"model": ErrorBody, "description": "The new model was refused"},
            415: {"model": ErrorBody, "description": "Content-Type is not application/json"},
        },
    )
    async def reload_model() -> Any:
        reloader: ModelReloader = state["reloader"]
        try:
            model = await reloader.reload()
        except ModelLoadError:
            # The reason (with file paths) is in the log as event "model_refused".
            return JSONResponse(
                error_body("model refused; the current model keeps serving (reason in the log)"),
                status_code=409,
            )
        return {"name": model.name, "version": model.version}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            event_schema = PredictEvent.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(event_schema.pop("$defs", {}))
            components["PredictEvent"] = event_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    known_paths.update(getattr(r, "path", "") for r in app.routes)
    app.state.metrics = metrics
    app.state.runtime = state
    return app
