"""Turning one raw Kafka record value into an event, or into the reason it is not one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pydantic_core
from pydantic import ValidationError

from schemas import ErrorKind, InputEvent
from schemas.events import capped, hour_offset_written_out, too_many_features
from schemas.json_text import may_hold_non_json_numbers, non_json_numbers, utf8_problem, without_bom
from schemas.validation import field_problems

NO_TIMESTAMP = -1
"""What both clients report for a record without a timestamp."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MESSAGE_CHARS = 1_000


@dataclass(frozen=True)
class Rejection:
    """Why a record cannot be scored: the dead-letter headers' kind and message."""

    kind: ErrorKind
    message: str


MAX_PROBLEMS = 100
"""Problems put into a message: more would not fit in ``MAX_MESSAGE_CHARS`` (each one is at
least a location, a colon and a message), and a hostile record can hold 100,000 of them."""


def _describe(exc: ValidationError) -> Rejection:
    problems = field_problems(exc, MAX_PROBLEMS)
    if any(p.kind == "json_invalid" for p in problems):
        reason = problems[0].message.removeprefix("Invalid JSON: ")
        return Rejection(ErrorKind.INVALID_JSON, f"not valid JSON: {reason}")
    parts = [
        "the event must be a JSON object"
        if p.not_an_object
        else f"{p.location or 'event'}: {p.message}"
        for p in problems
    ]
    message = "; ".join(parts)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return Rejection(ErrorKind.INVALID_EVENT, message)


def parse_record(
    value: bytes | None, max_bytes: int, max_features: int | None = None
) -> InputEvent | Rejection:
    """Parse and validate a record value (at most ``max_features`` features, if given).
    Never raises for any input."""
    if value is None:
        return Rejection(ErrorKind.TOMBSTONE, "the record's value is null (a tombstone)")
    if not value:
        return Rejection(ErrorKind.EMPTY_VALUE, "the record's value is empty")
    if len(value) > max_bytes:
        return Rejection(
            ErrorKind.TOO_LARGE, f"the value is {len(value)} bytes; the limit is {max_bytes}"
        )
    text = without_bom(value)
    try:
        model = InputEvent if max_features is None else capped(InputEvent, max_features)
        # Validated from the bytes (no decoded copy): invalid UTF-8 fails as invalid JSON,
        # and is then told apart below. A UTF-8 byte order mark is ignored, as over HTTP
        # (schemas.json_text: both doors read the same bytes the same way).
        event = model.model_validate_json(text)
    except ValidationError as exc:
        retried = _validated_again(text, model)
        if not isinstance(retried, InputEvent):
            failure = exc if retried is None else retried
            return _not_utf8(value) or _over_cap(value, max_features) or _describe(failure)
        event = retried
    except (ValueError, RecursionError) as exc:  # e.g. nesting too deep for the parser
        return _not_utf8(value) or Rejection(ErrorKind.INVALID_JSON, f"not valid JSON: {exc}")
    except Exception as exc:  # never let one record's content stop the consumer
        return Rejection(ErrorKind.INVALID_EVENT, f"cannot be read as an event: {exc!r}")
    if may_hold_non_json_numbers(text) and (problem := non_json_numbers(text)) is not None:
        return Rejection(ErrorKind.INVALID_JSON, f"not valid JSON: {problem}")
    return event


def _validated_again(text: bytes, model: type[InputEvent]) -> InputEvent | ValidationError | None:
    """The event validated again from its decoded form, or why that fails (as the sidecar
    reads a body); None when it cannot be decoded (the first error says why).

    Decoded, a name repeated in an object keeps its last value, as in most JSON readers and as
    the sidecar reads a body (direct validation of the bytes checks every repeat), and an
    ``event_time`` offset of hours alone (``+05``) is written out (``+05:00``).
    """
    try:
        decoded = pydantic_core.from_json(text)
    except Exception:  # unreadable: the first error says why
        return None
    fixed = hour_offset_written_out(decoded)
    try:
        return model.model_validate(decoded if fixed is None else fixed)
    except ValidationError as exc:
        return exc


def _over_cap(value: bytes, max_features: int | None) -> Rejection | None:
    """The rejection of an event over the features cap, whatever else is wrong with it (only
    asked once validation has failed); None when it is not over."""
    if max_features is None:
        return None
    try:
        decoded = pydantic_core.from_json(without_bom(value))
    except ValueError:
        return None
    problem = too_many_features(decoded, max_features)
    return None if problem is None else Rejection(ErrorKind.INVALID_EVENT, f"features: {problem}")


def _not_utf8(value: bytes) -> Rejection | None:
    """The rejection of a value that is not UTF-8; None when it is."""
    problem = utf8_problem(value)
    if problem is None:
        return None
    return Rejection(ErrorKind.INVALID_ENCODING, f"the value is not UTF-8: {problem}")


def record_time(timestamp: int | None) -> datetime | None:
    """The Kafka record timestamp (ms since the epoch) as a UTC time, to the millisecond; None
    when there is none (Kafka's -1). Another negative value is a time before 1970, as written.

    Raises ``ValueError`` for a timestamp no ``datetime`` can hold (brokers accept any 64-bit
    value, e.g. past the year 9999).
    """
    if timestamp is None or timestamp == NO_TIMESTAMP:
        return None
    try:
        # Integer arithmetic: ``timestamp / 1000`` as a float loses milliseconds past ~2200.
        # Positional (days, seconds, microseconds, milliseconds): the keyword form costs
        # twice as much, on every record without an event_time.
        return _EPOCH + timedelta(0, 0, 0, timestamp)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"the record timestamp {timestamp} ms is out of range") from exc


def read_record(
    value: bytes | None, timestamp: int | None, max_bytes: int, max_features: int | None = None
) -> tuple[InputEvent, datetime | None] | Rejection:
    """A consumed record as (event, the record time standing in for a missing event_time; None
    when the event has its own), or the reason it cannot be scored. The scorer and the audit
    both decide with this."""
    parsed = parse_record(value, max_bytes, max_features)
    if isinstance(parsed, Rejection):
        return parsed
    if parsed.event_time is not None:
        return parsed, None  # the event's own time is used: the record's is not needed
    try:
        return parsed, record_time(timestamp)
    except ValueError as exc:
        return Rejection(ErrorKind.INVALID_EVENT, f"event_time: absent, and {exc}")
