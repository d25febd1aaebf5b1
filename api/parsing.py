"""Turning a ``/predict`` body into events, or into a bounded 422.

Pure and synchronous: the app runs it in a worker thread for large bodies, so the event loop
never spends the time a hostile body costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from api.requests import FieldError, PredictEvent
from schemas import capped, too_many_features
from schemas.events import hour_offset_written_out
from schemas.json_text import load_json, non_json_numbers, without_bom
from schemas.validation import field_problems


class InvalidBody(Exception):
    """The body cannot be scored: ``errors`` holds the first few field errors, ``count`` all."""

    def __init__(self, detail: str, errors: list[FieldError], count: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.count = len(errors) if count is None else count


@dataclass(frozen=True)
class Limits:
    max_events: int
    max_features: int
    max_errors: int
    one_pass_below: int = 32_768
    """Bodies shorter than this holding one event are parsed and validated in one pass."""


def _field_errors(
    exc: ValidationError, item: object, prefix: str, room: int, max_features: int
) -> tuple[list[FieldError], int]:
    """The first ``room`` errors of ``item`` (one decoded event) and how many it has in all.
    An event over the features cap has that one error, whatever else is wrong with it."""
    over = too_many_features(item, max_features)
    if over is not None:
        return [FieldError(field=f"{prefix}.features", message=over)][: max(room, 0)], 1
    out: list[FieldError] = []
    for problem in field_problems(exc, room) if room > 0 else []:
        field = f"{prefix}.{problem.location}" if problem.location else prefix
        message = "each event must be a JSON object" if problem.not_an_object else problem.message
        out.append(FieldError(field=field, message=message))
    return out, exc.error_count()


def _one(field: str, message: str, detail: str) -> InvalidBody:
    return InvalidBody(detail, [FieldError(field=field, message=message)])


def parse_body(raw: bytes, limits: Limits) -> tuple[list[PredictEvent], bool]:
    """(events, was_a_list). Raises :class:`InvalidBody` naming the offending fields.

    A body of one event shorter than ``limits.one_pass_below`` is first parsed and validated
    in one pass; one that fails it is read again to name its errors (larger bodies, hostile
    ones among them, are read once).

    The cheap caps come first: the number of events, then (in each event) the number of
    features: an event over it has that one error, whatever else is wrong with it. A 422
    lists at most ``max_errors`` field errors and counts them all.
    """
    model = capped(PredictEvent, limits.max_features)
    text = without_bom(raw)  # read as the stream reads a record (schemas.json_text)
    events, was_a_list = _events(raw, text, model, limits)
    problem = non_json_numbers(text)  # valid events but for a NaN in an extra field
    if problem is not None:
        raise _one("body", "not valid JSON", f"the body is not valid JSON: {problem}")
    return events, was_a_list


def _events(
    raw: bytes, text: bytes, model: type[PredictEvent], limits: Limits
) -> tuple[list[PredictEvent], bool]:
    if text[:1] == b"{" and len(text) < limits.one_pass_below:
        # One event, the common case: parsed and validated in one pass (pydantic's own JSON
        # parser, as the stream reads records). Anything it refuses takes the path below,
        # which names the errors.
        try:
            return [model.model_validate_json(text)], False
        except (ValidationError, ValueError, RecursionError):
            pass
    try:
        payload = load_json(raw)
    except ValueError as exc:
        raise _one("body", "not valid JSON", f"the body is not valid JSON: {exc}") from None
    if isinstance(payload, dict):
        try:
            return [_validate(model, payload)], False
        except ValidationError as exc:
            shown, count = _field_errors(
                exc, payload, "body", limits.max_errors, limits.max_features
            )
            raise InvalidBody(_summary(shown, count), shown, count) from None
    if not isinstance(payload, list):
        raise _one(
            "body",
            "expected an object or a list",
            "the body must be an event object or a list of event objects",
        )
    if not payload:
        detail = "the body is an empty list: send at least one event"
        raise _one("body", "at least one event", detail)
    if len(payload) > limits.max_events:
        raise _one(
            "body",
            f"at most {limits.max_events} events",
            f"the body has {len(payload)} events; at most {limits.max_events} per request",
        )
    events: list[PredictEvent] = []
    errors: list[FieldError] = []
    count = 0
    for i, item in enumerate(payload):
        try:
            events.append(_validate(model, item))
        except ValidationError as exc:
            room = limits.max_errors - len(errors)
            shown, found = _field_errors(exc, item, f"body[{i}]", room, limits.max_features)
            count += found
            errors.extend(shown)
    if count:
        raise InvalidBody(_summary(errors, count), errors, count)
    return events, True


def _validate(model: type[PredictEvent], item: object) -> PredictEvent:
    """One decoded event; one whose ``event_time`` has an offset of hours alone (``+05``) is
    validated again with it written out (``+05:00``), as the stream does."""
    try:
        return model.model_validate(item)
    except ValidationError:
        fixed = hour_offset_written_out(item)
        if fixed is None:
            raise
    return model.model_validate(fixed)


def _summary(errors: list[FieldError], count: int) -> str:
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    more = f" (and {count - 5} more)" if count > 5 else ""
    return f"invalid input: {shown}{more}"
