"""The FastAPI sidecar: the composition root.

The lifespan opens the scoring service (the same one the stream opens) and the sidecar's own
parts around it; the app mounts the guard, the routes and the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.deps import open_sidecar
from api.direct import PATH, DirectPredict, FrontedApp
from api.guard import Guard
from api.metrics import ApiMetrics
from api.openapi import document
from api.requests import error_body
from api.routes import add_routes
from scoring.resources import open_pipeline
from scoring.service import PipelineFactory, ScoringService, open_scoring
from settings import Settings
from telemetry.logs import ThrottledLog

log = logging.getLogger(__name__)


def create_app(settings: Settings, pipeline_factory: PipelineFactory = open_pipeline) -> FrontedApp:
    """The sidecar for ``settings``; ``pipeline_factory`` opens its pipeline (tests pass one
    over an in-memory feature source)."""
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_scoring(
                settings, pipeline_factory=pipeline_factory, registry=metrics.registry
            ) as service,
            open_sidecar(settings, service, metrics, ThrottledLog(log)) as sidecar,
        ):
            app.state.sidecar = sidecar
            hangup = _reload_on_hangup(service)
            try:
                yield
            finally:
                hangup()
                del app.state.sidecar

    app = FrontedApp(
        title="streamscore sidecar",
        version="0.1.0",
        summary="Request/response scoring with the same enrichment and model as the stream.",
        lifespan=lifespan,
    )
    add_routes(app, settings.api)
    app.add_exception_handler(HTTPException, _http_error)
    known_paths = {getattr(route, "path", "") for route in app.routes}
    (predict_route,) = [r for r in app.routes if getattr(r, "path", "") == PATH]
    app.front = Guard(
        DirectPredict(app.framework, route=predict_route),
        metrics=metrics,
        api_key=settings.api.api_key,
        max_body_bytes=settings.api.max_body_bytes,
        max_in_flight=settings.api.max_in_flight,
        retry_after_s=settings.api.retry_after_s,
        known_paths=known_paths,
    )
    document(app, settings.api.max_features_per_event, keyed=settings.api.api_key is not None)
    return app


def _reload_on_hangup(service: ScoringService) -> Callable[[], None]:
    """SIGHUP reloads the model files at once, as in the scorer (uvicorn handles only SIGINT
    and SIGTERM: without this, SIGHUP would end the process). Returns the undo."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def reload_now() -> None:
        task = loop.create_task(service.reload_models())
        tasks.add(task)
        task.add_done_callback(_forget_from(tasks))

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload_now)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not main thread)
        return lambda: None
    return undo


def _forget_from(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a refusal is logged and counted by the reloader

    return done


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """The framework's own errors (404 for an unknown path, 405 for a method a route does not
    take) in the body every other error has."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )
