"""The sidecar's routes. Each takes what it needs through :mod:`api.deps`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.batching import Overloaded
from api.body import Refused
from api.deps import ServiceDep, Sidecar, SidecarDep
from api.guard import unavailable
from api.openapi import PREDICT_ERRORS, RELOAD_ERRORS, predict_body
from api.parsing import InvalidBody
from api.requests import ErrorBody, FieldError, PredictionWithChallenger, error_body
from schemas import Prediction
from schemas.events import format_time
from scoring import EnrichmentUnavailable, ModelLoadError, ScoringTimeout
from settings import ApiSettings

log = logging.getLogger(__name__)


async def predict(request: Request, sidecar: SidecarDep) -> Response:
    """Score one event or a list of events, within ``request_timeout_s`` (reading the body
    included: a body that has not arrived by then is a 408, the client's delay)."""
    api = sidecar.settings.api
    progress = _Progress()
    try:
        async with asyncio.timeout(api.request_timeout_s):
            return await _predict(request, sidecar, progress)
    except TimeoutError:
        if not progress.body_read:
            return JSONResponse(
                error_body(f"the request body did not arrive within {api.request_timeout_s:g} s"),
                status_code=408,
                headers={"Connection": "close"},
            )
        sidecar.metrics.shed.labels("deadline").inc()
        return unavailable("scoring took too long: try again later", api.retry_after_s)


class _Progress:
    """How far a request got (what a timeout interrupted)."""

    __slots__ = ("body_read",)

    def __init__(self) -> None:
        self.body_read = False


_YES = frozenset({"true", "1", "yes", "on"})
_NO = frozenset({"false", "0", "no", "off", ""})


def _challenger_wanted(request: Request) -> bool | None:
    """``?challenger=``: True or False; None when a value given is neither, or when the
    parameter is given twice with different meanings."""
    if not request.scope.get("query_string"):
        return False  # most requests: no query string to parse
    values = [v.strip().lower() for v in request.query_params.getlist("challenger")] or [""]
    wanted = {True if v in _YES else False if v in _NO else None for v in values}
    return wanted.pop() if len(wanted) == 1 else None


async def _predict(request: Request, sidecar: Sidecar, progress: _Progress) -> Response:
    retry_after_s = sidecar.settings.api.retry_after_s
    with_challenger = _challenger_wanted(request)
    if with_challenger is None:
        message = "must be true or false (also 1/0, yes/no, on/off)"
        return JSONResponse(
            error_body(
                f"invalid query parameter challenger: {message}",
                [FieldError(field="query.challenger", message=message)],
            ),
            status_code=422,
        )
    try:
        raw = await sidecar.bodies.receive(request)
        progress.body_read = True
        events, many = await sidecar.bodies.parse(raw)
    except Refused as exc:
        return exc.response
    except InvalidBody as exc:
        return JSONResponse(error_body(exc.detail, exc.errors, exc.count), status_code=422)
    try:
        paired = await sidecar.batcher.submit(events)
    except Overloaded:
        sidecar.metrics.shed.labels("queue").inc()
        return unavailable("overloaded: try again later", retry_after_s)
    except EnrichmentUnavailable as exc:
        sidecar.log.warning("enrichment_unavailable", "predict: MongoDB unavailable: %s", exc)
        return unavailable("MongoDB unavailable", retry_after_s)
    except ScoringTimeout as exc:
        sidecar.log.warning("scoring_timeout", "predict: %s", exc)
        return unavailable("scoring timed out", retry_after_s)
    # Serialise once here; FastAPI would otherwise validate the models again.
    if with_challenger:
        items = [_both(prediction, challenger) for prediction, challenger in paired]
    else:
        items = [prediction.model_dump_json().encode() for prediction, _ in paired]
    body = b"[" + b",".join(items) + b"]" if many else items[0]
    return Response(body, media_type="application/json")


def _both(prediction: Prediction, challenger: Prediction | None) -> bytes:
    """``{"prediction": ..., "challenger": ... or null}`` (``?challenger=true``)."""
    other = challenger.model_dump_json().encode() if challenger is not None else b"null"
    return (
        b'{"prediction":' + prediction.model_dump_json().encode() + b',"challenger":' + other + b"}"
    )


async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(sidecar: SidecarDep) -> Any:
    """Readiness: model loaded and MongoDB answering."""
    pipeline = sidecar.service.pipeline
    timeout_s = sidecar.settings.mongo.server_selection_timeout_ms / 1000 + 1
    try:
        await asyncio.wait_for(pipeline.ping(), timeout=timeout_s)
    except (EnrichmentUnavailable, TimeoutError) as exc:
        sidecar.log.warning("not_ready", "readyz: MongoDB is not answering: %r", exc)
        return unavailable("not ready: MongoDB unavailable", sidecar.settings.api.retry_after_s)
    return {"status": "ready", "model": f"{pipeline.model.name}:{pipeline.model.version}"}


async def model_info(service: ServiceDep) -> dict[str, Any]:
    """The model in use (no file paths)."""
    model = service.pipeline.model
    return {
        "name": model.name,
        "version": model.version,
        "feature_names": list(model.feature_names),
        "loaded_at": format_time(model.loaded_at.astimezone(UTC)),
    }


async def reload_model(service: ServiceDep) -> Any:
    """Load the model file now (and the challenger's); 409 when the model is refused (the
    reason, with paths, goes to the log)."""
    try:
        model = await service.reload_models()
    except ModelLoadError:
        return JSONResponse(
            error_body("model refused; the current model keeps serving (reason in the log)"),
            status_code=409,
        )
    return {"name": model.name, "version": model.version}


async def promote_challenger(service: ServiceDep) -> Any:
    """Make the challenger the main model (files swapped; every scorer picks it up); 409 when
    there is none or it is refused (the reason, with paths, goes to the log)."""
    try:
        promotion = await service.promote()
    except ModelLoadError as exc:
        log.error("promotion refused: %s", exc, extra={"event": "promotion_refused"})
        return JSONResponse(
            error_body("challenger refused or not configured; nothing changed (reason in the log)"),
            status_code=409,
        )
    return {"main": promotion.main.model_dump(), "challenger": promotion.challenger.model_dump()}


async def prometheus(service: ServiceDep) -> Response:
    """Prometheus exposition of the process's registry: transport and scoring metrics."""
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


def add_routes(routes: FastAPI, api: ApiSettings) -> None:
    """Every route, with its OpenAPI description (``/predict``'s list bound comes from ``api``).

    Added to the app itself rather than through an included ``APIRouter``: the guard labels
    metrics with the app's own route paths, known before any request.
    """
    routes.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=Prediction
        | list[Prediction]
        | PredictionWithChallenger
        | list[PredictionWithChallenger],
        responses=PREDICT_ERRORS,
        summary="Score one event or a list of events",
        openapi_extra=predict_body(api.max_events_per_request),
    )
    routes.add_api_route("/healthz", healthz, summary="Liveness: the process answers")
    routes.add_api_route(
        "/readyz",
        readyz,
        summary="Readiness: model loaded and MongoDB answering",
        responses={503: {"model": ErrorBody}},
    )
    routes.add_api_route("/model", model_info, summary="The model in use")
    admin = api.api_key is not None  # served (and documented) only with a key
    routes.add_api_route(
        "/admin/reload-model",
        reload_model,
        methods=["POST"],
        summary="Load the model file now (validated; the old model keeps serving if refused). "
        "Served only when an API key is configured.",
        responses=RELOAD_ERRORS,
        include_in_schema=admin,
    )
    routes.add_api_route(
        "/admin/promote-challenger",
        promote_challenger,
        methods=["POST"],
        summary="Make the challenger the main model: both models' files are swapped (the old "
        "main becomes the challenger) and every scorer picks them up. Served only when an API "
        "key is configured.",
        responses=RELOAD_ERRORS,
        include_in_schema=admin,
    )
    routes.add_api_route(
        "/metrics", prometheus, summary="Prometheus metrics", response_class=Response
    )
    # HEAD too, on every GET route (load balancers, orchestrators and ``curl -I`` probe with
    # it): the same status and headers, no body; the GET documents both.
    head: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/model", model_info),
        ("/metrics", prometheus),
    )
    for path, endpoint in head:
        routes.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
