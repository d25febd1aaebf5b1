"""HTTP request and error bodies."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from schemas import InputEvent, Prediction
from schemas.events import Identifier


def _new_event_id() -> str:
    return f"http-{uuid.uuid4().hex}"


def _null_is_absent(value: Any) -> Any:
    return _new_event_id() if value is None else value


class PredictEvent(InputEvent):
    """An input event as ``/predict`` takes it: ``event_id`` may be omitted or ``null`` (one is
    generated), as ``null`` means absent for ``event_time`` and ``features``."""

    event_id: Annotated[Identifier, BeforeValidator(_null_is_absent)] = Field(
        default_factory=_new_event_id
    )


class PredictionWithChallenger(BaseModel):
    """One answer of ``/predict?challenger=true`` (documentation: the route writes its JSON)."""

    prediction: Prediction
    challenger: Prediction | None
    """The challenger's prediction of the same vector; null when no challenger is attached."""


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error response, whatever its status: a readable message, plus the offending
    fields for 422 (the first ``STREAMSCORE_API__MAX_ERRORS_REPORTED`` of them, and how many
    there are in all; none and 0 for other statuses)."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
    error_count: int = 0


def error_body(
    detail: str, errors: list[FieldError] | None = None, error_count: int | None = None
) -> dict[str, Any]:
    listed = errors or []
    count = len(listed) if error_count is None else error_count
    return ErrorBody(detail=detail, errors=listed, error_count=count).model_dump()
