"""The prediction contract (topic ``predictions``, keyed by entity_id)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from schemas.events import format_time


class Enrichment(StrEnum):
    """Whether the entity's stored features took part in the score."""

    HIT = "hit"
    """The entity's document was found and its features used."""
    MISS = "miss"
    """No document for the entity: scored on the event's own features."""
    ERROR = "error"
    """MongoDB could not be read and the operator chose to score without stored features."""


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str


class Reason(BaseModel):
    """One feature's share of a score (LightGBM ``pred_contrib``), in raw-score units."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float | None
    """The value the model used (the event's, else the stored one); null when missing."""
    contribution: float
    """How far this feature moved the raw score (log-odds for a binary model) from the
    model's expected value; the contributions of all features plus the expected value add
    up to the raw score."""


class Prediction(BaseModel):
    """One prediction per input event."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    entity_id: str
    score: float
    model: ModelRef
    enrichment: Enrichment
    event_time: datetime
    scored_at: datetime
    reasons: list[Reason] | None = Field(default=None, exclude_if=lambda value: value is None)
    """Reason codes (``STREAMSCORE_MODEL__REASONS``): the features that pushed the score most,
    by absolute contribution; empty below ``REASONS_MIN_SCORE``; absent when off."""

    @field_serializer("event_time", "scored_at")
    def _times(self, value: datetime) -> str:
        return format_time(value)
