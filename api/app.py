"""The FastAPI sidecar, built on the same :class:`ScoringPipeline` as the stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from api.batching import MicroBatcher
from api.guard import Guard, too_large
from api.metrics import ApiMetrics
from api.requests import ErrorBody, FieldError, PredictEvent, error_body
from schemas import InputEvent, Prediction
from scoring import EnrichmentUnavailable, ModelLoadError, ScoringPipeline, ScoringTimeout
from scoring.loop_lag import LoopLagMonitor, tune_gc
from scoring.model_reload import ModelReloader
from scoring.resources import open_pipeline
from settings import Settings

PipelineFactory = Callable[[Settings], AbstractAsyncContextManager[ScoringPipeline]]


class InvalidBody(Exception):
    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def _field_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in error["loc"])
        field = f"{prefix}.{loc}" if loc else prefix
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc and error["type"] in {"model_type", "model_attributes_type"}:
            message = "each event must be a JSON object"
        out.append(FieldError(field=field, message=message))
    return out


def parse_body(raw: bytes, max_events: int) -> tuple[list[PredictEvent], bool]:
    """(events, was_a_list). Raises :class:`InvalidBody` naming the offending fields."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidBody(
            f"the body is not valid JSON: {exc}",
            [FieldError(field="body", message="not valid JSON")],
        ) from None
    if isinstance(payload, dict):
        try:
            return [PredictEvent.model_validate(payload)], False
        except ValidationError as exc:
            errors = _field_errors(exc, "body")
            raise InvalidBody(_summary(errors), errors) from None
    if isinstance(payload, list):
        if not payload:
            raise InvalidBody(
                "the body is an empty list: send at least one event",
                [FieldError(field="body", message="at least one event")],
            )
        if len(payload) > max_events:
            raise InvalidBody(
                f"the body has {len(payload)} events; at most {max_events} per request",
                [FieldError(field="body", message=f"at most {max_events} events")],
            )
        events, errors = [], []
        for i, item in enumerate(payload):
            try:
                events.append(PredictEvent.model_validate(item))
            except ValidationError as exc:
                errors.extend(_field_errors(exc, f"body[{i}]"))
        if errors:
            raise InvalidBody(_summary(errors), errors)
        return events, True
    raise InvalidBody(
        "the body must be an event object or a list of event objects",
        [FieldError(field="body", message="expected an object or a list")],
    )


def _summary(errors: list[FieldError]) -> str:
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"invalid input: {shown}{more}"


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

            batcher = MicroBatcher(score, api.batch_max_size, api.batch_max_wait_ms / 1000)
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
                score=score,
                reloader=reloader,
                started=time.time(),
            )
            try:
                yield
            finally:
                await batcher.close()
                await monitor.stop()
                await reloader.stop()
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
        known_paths=known_paths,
    )

    errors = {
        401: {"model": ErrorBody, "description": "Missing or wrong API key"},
        413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
        422: {"model": ErrorBody, "description": "Invalid input; `errors` names each field"},
        503: {"model": ErrorBody, "description": "MongoDB unavailable; see Retry-After"},
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
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > api.max_body_bytes:
                return too_large(api.max_body_bytes)
        try:
            events, many = parse_body(bytes(body), api.max_events_per_request)
        except InvalidBody as exc:
            return JSONResponse(error_body(exc.detail, exc.errors), status_code=422)
        try:
            if api.batching_enabled:
                predictions = await state["batcher"].submit(events)
            else:
                predictions = await state["score"](events)
        except (EnrichmentUnavailable, ScoringTimeout) as exc:
            return JSONResponse(
                error_body(f"scoring is unavailable right now: {exc}"),
                status_code=503,
                headers={"Retry-After": str(api.retry_after_s)},
            )
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
            return JSONResponse(
                error_body(f"not ready: MongoDB is not answering: {exc}"),
                status_code=503,
                headers={"Retry-After": str(api.retry_after_s)},
            )
        return {"status": "ready", "model": f"{pipeline.model.name}:{pipeline.model.version}"}

    @app.get("/model", summary="The model in use")
    async def model_info() -> dict[str, Any]:
        model = state["pipeline"].model
        return {
            "name": model.name,
            "version": model.version,
            "feature_names": list(model.feature_names),
            "loaded_at": model.loaded_at.astimezone(UTC).isoformat(),
            "path": str(model.path),
        }

    @app.post(
        "/admin/reload-model",
        summary="Load the model file now (validated; the old model keeps serving if refused)",
        responses={422: {"model": ErrorBody, "description": "The new model was refused"}},
    )
    async def reload_model() -> Any:
        reloader: ModelReloader = state["reloader"]
        try:
            model = await reloader.reload()
        except ModelLoadError as exc:
            return JSONResponse(error_body(f"model refused: {exc}"), status_code=422)
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
