"""The input event contract (topic ``events``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

MAX_ID_LENGTH = 128
MAX_FEATURES = "max_features"
"""Validation-context key of the features-per-event cap (see :func:`event_limits`)."""

Identifier = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH)]
"""A plain string of 1-128 characters. Objects such as ``{"$ne": null}`` never pass."""


FeatureValue = Annotated[float | None, Field(strict=True, allow_inf_nan=False)]
"""A finite number or null. Booleans, strings, NaN, infinities and integers too large for a
double are rejected (by pydantic itself, no Python per value: :func:`finite_number` is the
same rule for stored features)."""


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
"""What pydantic would read as Unix seconds from a string ("1764064800", "-5", ".5",
"1.5e9")."""


def _event_time(value: Any, handler: ValidatorFunctionWrapHandler) -> datetime | None:
    """An ISO-8601 string (or a datetime) as a UTC time; a naive time is taken as UTC.
    Numbers, and strings of digits, are refused rather than read as Unix times: pydantic would
    read "20261125" (an ISO-8601 basic date) as 1970-08-23."""
    if value is None:
        return None
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO-8601 date-time string")
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError(
            "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number"
        )
    parsed: datetime = handler(value)
    return _as_utc(parsed)


EventTime = Annotated[datetime | None, WrapValidator(_event_time)]

_Ignored = Annotated[None, PlainValidator(lambda _value: None)]
"""An extra field's value: whatever it is, dropped (the name stays, to be counted)."""


class InputEvent(BaseModel):
    """One event as producers send it. Extra top-level fields are ignored: only their names
    are kept (in ``model_extra``, each mapped to None) so that the pipeline can count them;
    their values are dropped as they are read, never held with the event."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, _Ignored] = Field(init=False)

    event_id: Identifier
    entity_id: Identifier
    event_time: EventTime = None
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    """Names the model does not use are accepted and ignored (a tolerant reader), up to the
    features-per-event cap given in the validation context (:func:`event_limits`). Absent or
    null: the event has no features of its own."""

    @field_validator("features", mode="before")
    @classmethod
    def _at_most_max_features(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:  # null means none, as an absent field does
            return {}
        # Counted before any value is validated: an event over the cap costs one len().
        cap = info.context.get(MAX_FEATURES) if isinstance(info.context, dict) else None
        if cap is not None and isinstance(value, dict) and len(value) > cap:
            raise ValueError(f"at most {cap} features per event, got {len(value)}")
        return value


def event_limits(max_features: int) -> dict[str, int]:
    """The validation context that caps features per event, for both doors::

        InputEvent.model_validate_json(raw, context=event_limits(settings.max_features_per_event))

    An event over the cap fails validation with one error at ``features``. Without a context
    there is no cap.
    """
    return {MAX_FEATURES: max_features}


_last_formatted: tuple[datetime, str] | None = None
"""The latest time :func:`format_time` formatted: a batch's predictions share one
``scored_at`` object, formatted once."""


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision and a ``Z`` suffix."""
    global _last_formatted
    last = _last_formatted
    if last is not None and last[0] is value:
        return last[1]
    if value.tzinfo is UTC:  # what validation and the scorer produce: no conversion
        text = value.isoformat(timespec="milliseconds")[:-6] + "Z"
    else:
        utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        text = utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    _last_formatted = (value, text)
    return text
