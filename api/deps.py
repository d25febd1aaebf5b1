"""What the routes get: the running sidecar's parts, as typed ``Depends`` aliases.

The lifespan opens a :class:`Sidecar` (the scoring service plus the sidecar's own batcher and
body reader) and keeps it on ``app.state.sidecar``; routes name what they need as a parameter
of one of the ``Annotated`` types below, and tests read it with :func:`sidecar_of`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from api.batching import MicroBatcher
from api.body import BodyReader
from api.metrics import ApiMetrics
from schemas import InputEvent, Prediction
from scoring.service import ScoringService
from settings import ApiSettings, Settings
from telemetry.logs import ThrottledLog

Paired = tuple[Prediction, Prediction | None]
"""One event's prediction and the challenger's (None: no challenger scored it)."""


def paired_scorer(
    service: ScoringService,
) -> Callable[[Sequence[InputEvent]], Awaitable[list[Paired]]]:
    """The pipeline call the sidecar batches: both models' predictions of each event."""

    async def score(events: Sequence[InputEvent]) -> list[Paired]:
        scored = await service.pipeline.score_all(events)
        challenger: Sequence[Prediction | None] = scored.challenger or [None] * len(events)
        return list(zip(scored.predictions, challenger, strict=True))

    return score


@dataclass(frozen=True)
class Sidecar:
    """The running sidecar: built at startup, closed at shutdown."""

    settings: Settings
    service: ScoringService
    batcher: MicroBatcher[Paired]
    bodies: BodyReader
    metrics: ApiMetrics
    log: ThrottledLog


@asynccontextmanager
async def open_sidecar(
    settings: Settings, service: ScoringService, metrics: ApiMetrics, log: ThrottledLog
) -> AsyncIterator[Sidecar]:
    """The sidecar's parts around a running scoring service; at exit the batcher finishes the
    calls it started and the parser thread stops."""
    api = settings.api
    # With batching off every request is its own pipeline call (max_size 1), under the same
    # bound on queued events.
    batcher = MicroBatcher(
        paired_scorer(service),
        api.batch_max_size if api.batching_enabled else 1,
        api.batch_max_wait_ms / 1000,
        max_queued=api.max_queued_events,
    )
    metrics.queued_events.set_function(lambda: batcher.queued)
    bodies = BodyReader(api, metrics)
    try:
        yield Sidecar(settings, service, batcher, bodies, metrics, log)
    finally:
        await batcher.close()
        bodies.close()


def sidecar_of(app: FastAPI) -> Sidecar:
    """The app's running sidecar; 503 when its lifespan has not started (or has ended)."""
    sidecar = getattr(app.state, "sidecar", None)
    if not isinstance(sidecar, Sidecar):
        raise HTTPException(503, "not ready: the model is not loaded")
    return sidecar


async def _sidecar(request: Request) -> Sidecar:
    return sidecar_of(request.app)


async def _service(request: Request) -> ScoringService:
    return sidecar_of(request.app).service


async def _api_settings(request: Request) -> ApiSettings:
    return sidecar_of(request.app).settings.api


async def _batcher(request: Request) -> MicroBatcher[Paired]:
    return sidecar_of(request.app).batcher


# Async dependencies: FastAPI runs plain ``def`` ones in a thread pool, a hop per request.
SidecarDep = Annotated[Sidecar, Depends(_sidecar)]
ServiceDep = Annotated[ScoringService, Depends(_service)]
ApiSettingsDep = Annotated[ApiSettings, Depends(_api_settings)]
BatcherDep = Annotated[MicroBatcher[Paired], Depends(_batcher)]
