"""Pydantic validation errors as readable field problems, the same way at both doors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.events import EVENT_TIME_FORMAT

MAX_NAME_CHARS = 64
"""A location part (a feature name, a field name) longer than this is cut in messages: a
producer's 1 MB feature name is not repeated back."""

NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type"})
"""Error types that mean the value as a whole is not a JSON object."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One validation error: where (dotted, ``""`` for the value itself) and why."""

    location: str
    message: str
    kind: str
    """Pydantic's error type, e.g. ``json_invalid``, ``missing``, ``string_type``."""

    @property
    def not_an_object(self) -> bool:
        """The value as a whole is not a JSON object (the message then says little)."""
        return not self.location and self.kind in NOT_AN_OBJECT


_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
"""What pydantic would read as Unix seconds from a string ("1764064800", "-5", ".5",
"1.5e9")."""


TIME_SHAPE = (
    "must be an ISO-8601 date-time such as 2026-11-25T10:00:00Z or 2026-11-25T10:00:00+05:00 "
    "(hours 00-23, seconds 00-59, an offset as +HH:MM, -HH:MM, +HHMM or +HH)"
)
"""What a valid ``event_time`` looks like, said with every reason it is not one."""

DATE_TIME_PARSING = frozenset({"datetime_parsing", "datetime_from_date_parsing"})
"""pydantic's error types of a string shaped like a date that is not a valid date-time."""


def _time_message(value: object) -> str:
    """Why an ``event_time`` is not a date-time: a number (or a string of one) is said so."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        return "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number"
    return "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z"


def _message(error: ErrorDetails) -> str:
    """The error's message; pydantic's own number errors say what the number rule says, and
    the event's own error types (a time that is not ISO-8601, too many features) are worded
    here."""
    kind = error["type"]
    if kind == EVENT_TIME_FORMAT:
        return _time_message(error.get("input"))
    if kind in DATE_TIME_PARSING:
        # pydantic's reason alone ("unexpected extra characters at the end of the input" for
        # "+05" or a leap second) does not say what a valid time looks like.
        reason = str((error.get("ctx") or {}).get("error") or error["msg"])
        return f"{TIME_SHAPE}: {reason}"
    if kind == "too_long" and error["loc"][-1:] == ("features",):
        cap = (error.get("ctx") or {}).get("max_length")
        given = error.get("input")
        count = f", got {len(given)}" if isinstance(given, dict) else ""
        return f"at most {cap} features per event{count}"
    if kind == "finite_number":
        value = error.get("input")
        if isinstance(value, int) and not isinstance(value, bool):  # from JSON: 400 digits
            return "must be a finite number (integer too large)"
        return f"must be a finite number, got {value}"
    if kind == "float_type":
        value = error.get("input")
        if isinstance(value, int) and not isinstance(value, bool):
            return "must be a finite number (integer too large)"
        return f"must be a number or null, not {type(value).__name__}"
    return str(error["msg"]).removeprefix("Value error, ")


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else f"{name[: MAX_NAME_CHARS - 3]}..."


def field_problems(exc: ValidationError, limit: int | None = None) -> list[FieldProblem]:
    """The errors of ``exc`` (the first ``limit`` of them, if given) without the input they
    rejected (inputs may hold secrets or be huge) and without pydantic's ``Value error, ``
    prefix on our own validators' messages. Number errors are worded like
    :func:`schemas.numbers.finite_number` (the input's type is named, a non-finite input
    shown)."""
    errors = exc.errors(include_url=False)
    return [
        FieldProblem(
            location=".".join(_short(str(part)) for part in error["loc"]),
            message=_message(error),
            kind=error["type"],
        )
        for error in (errors if limit is None else errors[:limit])
    ]
