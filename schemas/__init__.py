"""Shared message models (pydantic v2). No I/O lives here."""

from schemas.dead_letter import DeadLetterHeader, ErrorKind
from schemas.entity import EntityFeatures
from schemas.events import FeatureValue, InputEvent, event_limits, format_time
from schemas.prediction import Enrichment, ModelRef, Prediction, Reason

__all__ = [
    "DeadLetterHeader",
    "Enrichment",
    "EntityFeatures",
    "ErrorKind",
    "FeatureValue",
    "InputEvent",
    "ModelRef",
    "Prediction",
    "Reason",
    "event_limits",
    "format_time",
]
