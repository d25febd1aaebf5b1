"""Shared message models (pydantic v2). No I/O lives here."""

from schemas.dead_letter import DeadLetterHeader, ErrorKind
from schemas.entity import EntityFeatures
from schemas.events import FeatureValue, InputEvent, capped, format_time, too_many_features
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
    "capped",
    "format_time",
    "too_many_features",
]
