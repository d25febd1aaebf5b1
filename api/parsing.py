"""Turning a ``/predict`` body into events, or into a bounded 422.

Pure and synchronous: the app runs it in a worker thread for large bodies, so the event loop
never spends the time a hostile body costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from api.requests import FieldError, PredictEvent
from schemas import event_limits
from schemas.json_text import load_json, without_bom
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


def _field_errors(exc: ValidationError, prefix: str, room: int) -> list[FieldError]:
    out: list[FieldError] = []
    if room <= 0:
        return out
    for problem in field_problems(exc):
        field = f"{prefix}.{problem.location}" if problem.location else prefix
        message = "each event must be a JSON object" if problem.not_an_object else problem.message
        out.append(FieldError(field=field, message=message))
        if len(out) >= room:
            break
    return out


def _one(field: str, message: str, detail: str) -> InvalidBody:
    return InvalidBody(detail, [FieldError(field=field, message=message)])


def parse_body(raw: bytes, limits: Limits) -> tuple[list[PredictEvent], bool]:
    """(events, was_a_list). Raises :class:`InvalidBody` naming the offending fields.

    A body of one event shorter than ``limits.one_pass_below`` is first parsed and validated
    in one pass; one that fails it is read again to name its errors (larger bodies, hostile
    ones among them, are read once).

    The cheap caps come first: the number of events, then (in each event, before any of its
    values is validated) the number of features. A 422 lists at most ``max_errors`` field
    errors and counts them all.
    """
    context = event_limits(limits.max_features)
    text = without_bom(raw)  # read as the stream reads a record (schemas.json_text)
    if text[:1] == b"{" and len(text) < limits.one_pass_below:
        # One event, the common case: parsed and validated in one pass (pydantic's own JSON
        # parser, as the stream reads records). Anything it refuses takes the path below,
        # which names the errors.
        try:
            return [PredictEvent.model_validate_json(text, context=context)], False
        except (ValidationError, ValueError, RecursionError):
            pass
    try:
        payload = load_json(raw)
    except ValueError as exc:
        raise _one("body", "not valid JSON", f"the body is not valid JSON: {exc}") from None
    if isinstance(payload, dict):
        try:
            return [PredictEvent.model_validate(payload, context=context)], False
        except ValidationError as exc:
            shown = _field_errors(exc, "body", limits.max_errors)
            count = exc.error_count()
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
            events.append(PredictEvent.model_validate(item, context=context))
        except ValidationError as exc:
            count += exc.error_count()
            errors.extend(_field_errors(exc, f"body[{i}]", limits.max_errors - len(errors)))
    if count:
        raise InvalidBody(_summary(errors, count), errors, count)
    return events, True


def _summary(errors: list[FieldError], count: int) -> str:
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    more = f" (and {count - 5} more)" if count > 5 else ""
    return f"invalid input: {shown}{more}"
