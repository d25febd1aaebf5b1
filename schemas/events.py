"""The input event contract (topic ``events``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    create_model,
)
from pydantic_core import CoreSchema, core_schema

MAX_ID_LENGTH = 128

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


ISO_START = r"^[0-9]{4}-"
"""How an ISO-8601 date-time string begins: a four-digit year and a dash. What pydantic would
read as Unix seconds from a string ("1764064800", "-5", ".5", "1.5e9", the ISO-8601 basic
date "20261125", which it would read as 1970-08-23) never does."""

EVENT_TIME_FORMAT = "event_time_format"
"""Error type of an ``event_time`` that is not an ISO-8601 string (a number, a boolean, an
object, a string of digits): :func:`schemas.validation.field_problems` words it."""

EVENT_TIME_RANGE = "event_time_range"
"""Error type of an ``event_time`` with an offset that takes it past year 1 or 9999 in UTC."""


def _event_time_schema(_source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
    """An ISO-8601 string (or, from Python, a datetime) as a UTC time; a naive time is taken as
    UTC, an offset converted. Numbers, and strings of digits, are refused rather than read as
    Unix times.

    Built from pydantic-core's own validators, so an event in UTC (a ``Z`` or ``+00:00``
    suffix) costs no Python call: only a naive time or another offset is converted by
    :func:`_as_utc`.
    """
    shaped = core_schema.custom_error_schema(
        core_schema.json_or_python_schema(
            json_schema=core_schema.str_schema(pattern=ISO_START),
            python_schema=core_schema.union_schema(
                [
                    core_schema.is_instance_schema(datetime),
                    core_schema.str_schema(strict=True, pattern=ISO_START),
                ]
            ),
        ),
        custom_error_type=EVENT_TIME_FORMAT,
        custom_error_message="must be an ISO-8601 date-time string",
    )
    in_utc = core_schema.custom_error_schema(
        core_schema.union_schema(
            [
                core_schema.datetime_schema(tz_constraint=0),  # already UTC: kept as parsed
                core_schema.no_info_plain_validator_function(_as_utc),
            ],
            mode="left_to_right",
        ),
        custom_error_type=EVENT_TIME_RANGE,
        custom_error_message="is out of range once converted to UTC",
    )
    return core_schema.nullable_schema(
        core_schema.chain_schema([shaped, core_schema.datetime_schema(), in_utc])
    )


HOUR_OFFSET = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.,]+)([+-][0-9]{2})")
"""A date-time ending in an offset of hours alone (``+05``): ISO-8601's short form, as
PostgreSQL prints ``timestamptz``. pydantic reads only ``+05:00`` and ``+0500``."""


def hour_offset_written_out(event: object) -> dict[str, Any] | None:
    """``event`` (one decoded JSON event) with an ``event_time`` offset of hours alone written
    out (``+05`` as ``+05:00``); None when it has none. Asked only once validation has failed:
    an event in any other form costs nothing more."""
    if not isinstance(event, dict):
        return None
    sent = event.get("event_time")
    if not isinstance(sent, str) or (match := HOUR_OFFSET.fullmatch(sent)) is None:
        return None
    return {**event, "event_time": f"{match[1]}{match[2]}:00"}


EventTime = Annotated[
    datetime | None,
    GetPydanticSchema(_event_time_schema),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}),
]

SentFeatures = dict[str, FeatureValue] | None

_Ignored = Annotated[None, PlainValidator(lambda _value: None)]
"""An extra field's value: whatever it is, dropped (the name stays, to be counted)."""


class InputEvent(BaseModel):
    """One event as producers send it. Extra top-level fields are ignored: only their names
    are kept (in ``model_extra``, each mapped to None) so that the pipeline can count them;
    their values are dropped as they are read, never held with the event.

    Validated by pydantic-core alone (no Python call per event) unless its time has to be
    converted to UTC or it has extra fields (each one's value is dropped by a small
    function). :func:`capped` gives the class that also caps features per event.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, _Ignored] = Field(init=False)

    event_id: Identifier
    entity_id: Identifier
    event_time: EventTime = None
    sent_features: SentFeatures = Field(default=None, alias="features")
    """The ``features`` object as sent; None when it is absent or null (read it through
    :attr:`features`)."""

    @property
    def features(self) -> dict[str, float | None]:
        """The event's own features; names the model does not use are accepted and ignored (a
        tolerant reader). Absent or null: none."""
        sent = self.sent_features
        return sent if sent is not None else {}


Event = TypeVar("Event", bound=InputEvent)


@lru_cache(maxsize=32)
def capped(model: type[Event], max_features: int) -> type[Event]:
    """``model`` taking at most ``max_features`` features per event, for both doors::

        capped(InputEvent, settings.max_features_per_event).model_validate_json(raw)

    An event over the cap fails validation with one ``too_long`` error at ``features``
    (:func:`schemas.validation.field_problems` words it). One class per cap, made once.
    """
    limited = Annotated[SentFeatures, Field(max_length=max_features)]
    return create_model(
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        __doc__=model.__doc__,
        sent_features=(limited, Field(default=None, alias="features")),
    )


def too_many_features(event: object, max_features: int) -> str | None:
    """Why a decoded event (a JSON object) is over the features-per-event cap; None when it
    is not. A failed validation asks this first: the cap is the reason that matters, however
    many of the features are invalid too, and it costs one ``len()``."""
    features = event.get("features") if isinstance(event, dict) else None
    if isinstance(features, dict) and len(features) > max_features:
        return f"at most {max_features} features per event, got {len(features)}"
    return None


_last_formatted: tuple[datetime, str] | None = None
"""The latest time :func:`format_time` formatted: a batch's predictions share one
``scored_at`` object, formatted once."""


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix, as precise as the time itself: whole seconds
    without a fraction (``2026-11-25T10:00:00Z``, as the input event's example), then
    milliseconds, then microseconds. Parsed back, it is the same instant."""
    global _last_formatted
    last = _last_formatted
    if last is not None and last[0] is value:
        return last[1]
    micro = value.microsecond
    spec = "seconds" if not micro else "milliseconds" if not micro % 1000 else "microseconds"
    zone = value.tzinfo
    # What validation and the scorer produce (``UTC``, or pydantic's own zero offset for a
    # ``Z`` suffix): no conversion.
    if zone is UTC or (zone is not None and not zone.utcoffset(value)):
        text = value.isoformat(timespec=spec)[:-6] + "Z"
    else:
        utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        text = utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    _last_formatted = (value, text)
    return text
