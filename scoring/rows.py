"""A batch's predictions as columns: Prediction objects, or their JSON, made only when asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from pydantic_core import to_json

from schemas import Enrichment, InputEvent, ModelRef, Prediction, Reason
from schemas.events import format_time


@dataclass(frozen=True, eq=False)
class PredictionRows:
    """The predictions of one model for a batch of events, row ``i`` for ``events[i]``.

        The stream needs only each prediction's JSON and key; the sidecar needs the objects. Both
        come from these columns, so a prediction is never validated twice nor built when unused:
        :attr:`predictions` are the validated :class:`Prediction` objects, :meth:`encoded` is
        each one's JSON, byte for byte what ``Prediction.model_dump_json()`` gives. Both are made
    once, when first asked for (in the executor: see :func:`scoring.compute.compute`).
    """

    model: ModelRef
    events: Sequence[InputEvent]
    scores: Sequence[float]
    enrichment: Sequence[Enrichment]
    times: Sequence[datetime]
    scored_at: datetime
    reasons: Sequence[list[Reason]] | None = None

    def __len__(self) -> int:
        return len(self.events)

    @cached_property
    def predictions(self) -> list[Prediction]:
        model, scores, enrichment = self.model, self.scores, self.enrichment
        times, now, reasons = self.times, self.scored_at, self.reasons
        return [
            Prediction(
                event_id=event.event_id,
                entity_id=event.entity_id,
                score=scores[i],
                model=model,
                enrichment=enrichment[i],
                event_time=times[i],
                scored_at=now,
                reasons=reasons[i] if reasons is not None else None,
            )
            for i, event in enumerate(self.events)
        ]

    @cached_property
    def encoded(self) -> list[bytes]:
        """Each prediction's JSON (UTF-8), in row order.

        Serialised by pydantic's own serializer from plain values, skipping the objects;
        with reasons, through the objects.
        """
        if self.reasons is not None:
            return [p.model_dump_json().encode() for p in self.predictions]
        model = {"name": self.model.name, "version": self.model.version}
        scored_at = format_time(self.scored_at)
        scores, enrichment = self.scores, self.enrichment
        # Events of one batch often share their time (to the millisecond): each distinct
        # time is formatted once.
        formatted: dict[datetime, str] = {}
        times = [formatted.get(t) or formatted.setdefault(t, format_time(t)) for t in self.times]
        return [
            to_json(
                {
                    "event_id": event.event_id,
                    "entity_id": event.entity_id,
                    "score": scores[i],
                    "model": model,
                    "enrichment": enrichment[i].value,
                    "event_time": times[i],
                    "scored_at": scored_at,
                },
                inf_nan_mode="null",  # as the model's serializer: a NaN score is null
            )
            for i, event in enumerate(self.events)
        ]

    @cached_property
    def keys(self) -> list[bytes]:
        """The output record key of each row: its entity id."""
        return [event.entity_id.encode() for event in self.events]


def no_rows(model: ModelRef, scored_at: datetime) -> PredictionRows:
    """No predictions (an empty call)."""
    return PredictionRows(model, (), (), (), (), scored_at)
