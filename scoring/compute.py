"""What one pipeline call does in the executor: vectors, the model(s), reasons, predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from schemas import Enrichment, InputEvent, ModelRef, Reason
from scoring.cache import Lookup
from scoring.metrics import ScoringMetrics
from scoring.model import LoadedModel
from scoring.reasons import ReasonPolicy, explain
from scoring.rows import PredictionRows
from scoring.vectors import assemble


@dataclass(frozen=True)
class Computed:
    """The result of one executor call."""

    predictions: PredictionRows
    challenger: PredictionRows | None
    """The challenger's predictions, in the same order; None without a challenger, or when
    it failed (then ``challenger_error`` says why)."""
    challenger_error: Exception | None
    ignored: int
    """Event features the model does not use."""
    ignored_fields: int = 0
    """Top-level event fields that are not part of the contract."""


@dataclass(frozen=True)
class Shadow:
    """A challenger to score beside the main model, and where the metrics compare them."""

    model: LoadedModel
    metrics: ScoringMetrics
    threshold: float


def scoring_time() -> datetime:
    """Now, in UTC, to the millisecond (``scored_at``, as the contract shows it)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _enrichment(events: Sequence[InputEvent], stored: Lookup, failed: bool) -> list[Enrichment]:
    if failed:
        return [Enrichment.ERROR] * len(events)
    return [
        Enrichment.HIT if stored.get(event.entity_id) is not None else Enrichment.MISS
        for event in events
    ]


def _rows(
    model: LoadedModel,
    events: Sequence[InputEvent],
    scores: npt.NDArray[np.float64],
    enrichment: Sequence[Enrichment],
    times: Sequence[datetime],
    now: datetime,
    reasons: Sequence[list[Reason]] | None,
) -> PredictionRows:
    ref = ModelRef(name=model.name, version=model.version)
    return PredictionRows(ref, events, scores.tolist(), enrichment, times, now, reasons)


def _materialise(rows: PredictionRows, objects: bool) -> None:
    """Build (and cache) the rows' Prediction objects, or else their JSON."""
    if objects:
        rows.predictions  # noqa: B018
    else:
        rows.encoded  # noqa: B018
        rows.keys  # noqa: B018


def compute(
    model: LoadedModel,
    events: Sequence[InputEvent],
    stored: Lookup,
    failed: bool,
    fallback_times: Sequence[datetime | None] | None,
    reasons: ReasonPolicy | None = None,
    shadow: Shadow | None = None,
    eager: bool = True,
) -> Computed:
    """Score ``events`` with ``model`` (and the challenger of ``shadow``) on one lookup.

    1. Each model gets the contract's vector in its own feature order, from the same events
       and the same stored features; with the same feature names it is the very same matrix.
    2. The main predictions never depend on the challenger: an exception of the challenger
       is returned in ``challenger_error``, never raised.
    3. Reasons (when ``reasons`` is enabled) are the main model's only.
    4. With ``eager`` the :class:`Prediction` objects are built here (in the executor, for
       the sidecar); without, only their JSON (what the stream sends).
    """
    matrix, ignored = assemble(events, stored, model.feature_names)
    extra = sum(len(e.model_extra) for e in events if e.model_extra)
    scores = model.predict(matrix)
    now = scoring_time()
    enrichment = _enrichment(events, stored, failed)
    times = [
        event.event_time or (fallback_times[i] if fallback_times is not None else None) or now
        for i, event in enumerate(events)
    ]
    explained = explain(model, matrix, scores, reasons) if reasons and reasons.enabled else None
    predictions = _rows(model, events, scores, enrichment, times, now, explained)
    _materialise(predictions, eager)
    if shadow is None:
        return Computed(predictions, None, None, ignored, extra)
    try:
        challenger = shadow.model
        if challenger.feature_names == model.feature_names:
            other = matrix
        else:
            other, _ = assemble(events, stored, challenger.feature_names)
        other_scores = challenger.predict(other)
        if other_scores.shape != scores.shape:
            raise ValueError(f"challenger returned {other_scores.shape} scores for {len(events)}")
        shadow_predictions = _rows(challenger, events, other_scores, enrichment, times, now, None)
        _materialise(shadow_predictions, eager)
    except Exception as exc:  # a challenger never fails the main path
        return Computed(predictions, None, exc, ignored, extra)
    shadow.metrics.challenger_compared(scores, other_scores, shadow.threshold)
    return Computed(predictions, shadow_predictions, None, ignored, extra)
