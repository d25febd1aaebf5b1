"""The same bytes are an event, or not, on both doors: a Kafka record value and a ``/predict``
body are read by the same rules (schemas.json_text)."""

from __future__ import annotations

import json

import pytest

from api.parsing import InvalidBody, Limits, parse_body
from schemas import ErrorKind, InputEvent
from streams.records import Rejection, parse_record

EVENT = {"event_id": "e-1", "entity_id": "user-1", "features": {"amount": 5.0}}
TEXT = json.dumps(EVENT)


def _with_extra(extra: str) -> bytes:
    return (TEXT[:-1] + f', "extra": {extra}}}').encode()


ACCEPTED = {
    "plain": TEXT.encode(),
    "utf-8 byte order mark": b"\xef\xbb\xbf" + TEXT.encode(),
    "extra field nested 150 deep": _with_extra("[" * 150 + "]" * 150),
    "NaN and Infinity as strings": _with_extra('["NaN", "-Infinity", "Infinity"]'),
    "duplicate key: the last wins": TEXT[:-1].encode() + b', "event_id": "e-2"}',
    "duplicate feature: an invalid value before the last": TEXT.replace(
        '"amount": 5.0', '"amount": "x", "amount": true, "amount": 5.0'
    ).encode(),
    "duplicate field: an invalid value before the last": (
        b'{"entity_id": {"$ne": null}, "event_id": "e-1", "entity_id": "user-1",'
        b' "features": {"amount": 5.0}}'
    ),
    "unicode escapes in an extra field": _with_extra('"\\ud83d\\ude00 \\u00e9"'),
}
NO_FEATURES = {
    "features absent": b'{"event_id": "e-1", "entity_id": "user-1"}',
    "features null": b'{"event_id": "e-1", "entity_id": "user-1", "features": null}',
    "features empty": b'{"event_id": "e-1", "entity_id": "user-1", "features": {}}',
}
NOT_JSON_NUMBERS = {  # RFC 8259 has no such numbers; Python's json.dumps writes them
    "NaN in an extra field": _with_extra("NaN"),
    "Infinity nested in an extra field": _with_extra('{"a": [1, Infinity]}'),
    "-Infinity in an extra field": _with_extra("-Infinity"),
}
REFUSED = {
    "utf-16 with its byte order mark": TEXT.encode("utf-16"),
    "utf-16-le": TEXT.encode("utf-16-le"),
    "utf-32": TEXT.encode("utf-32"),
    "latin-1 bytes": TEXT[:-1].encode() + b', "x": "caf\xe9"}',
    "extra field nested 250 deep": _with_extra("[" * 250 + "]" * 250),
    "lone surrogate in an extra field": _with_extra('"\\ud800"'),
    "lone surrogate in event_id": TEXT.replace("e-1", "\\udfff").encode(),
    "an integer of 5,000 digits": TEXT.replace("5.0", "1" * 5_000).encode(),
    "trailing characters": TEXT.encode() + b" x",
    "two byte order marks": b"\xef\xbb\xbf" * 2 + TEXT.encode(),
    **NOT_JSON_NUMBERS,
}
FEATURE_NOT_A_NUMBER = {
    "NaN as a feature": TEXT.replace("5.0", "NaN").encode(),
    "-Infinity as a feature": TEXT.replace("5.0", "-Infinity").encode(),
}
LIMITS = Limits(max_events=1_000, max_features=1_000, max_errors=20)


def _http(raw: bytes) -> InputEvent | InvalidBody:
    try:
        (event,), _ = parse_body(raw, LIMITS)
    except InvalidBody as exc:
        return exc
    return event


@pytest.mark.parametrize("raw", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_alike(raw: bytes) -> None:
    record = parse_record(raw, 1 << 20, 1_000)
    body = _http(raw)
    assert isinstance(record, InputEvent), record
    assert isinstance(body, InputEvent), body.detail if isinstance(body, InvalidBody) else body
    assert record.event_id == body.event_id
    assert record.features == body.features == {"amount": 5.0}


@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
def test_refused_alike_with_a_reason(raw: bytes) -> None:
    record = parse_record(raw, 1 << 20, 1_000)
    body = _http(raw)
    assert isinstance(record, Rejection)
    assert isinstance(body, InvalidBody)
    assert record.kind in {ErrorKind.INVALID_JSON, ErrorKind.INVALID_ENCODING}
    assert body.errors[0].field == "body"
    if raw.startswith(TEXT[:3].encode("utf-16-le")):  # no byte order mark: ASCII and NULs
        assert record.kind is ErrorKind.INVALID_ENCODING
    if record.kind is ErrorKind.INVALID_ENCODING:  # both say it is the encoding
        assert "not UTF-8" in record.message
        assert "not UTF-8" in body.detail
    assert "sys.set_int_max_str_digits" not in body.detail  # no interpreter advice leaks


@pytest.mark.parametrize("raw", NO_FEATURES.values(), ids=NO_FEATURES.keys())
def test_absent_null_and_empty_features_are_alike(raw: bytes) -> None:
    record = parse_record(raw, 1 << 20, 1_000)
    body = _http(raw)
    assert isinstance(record, InputEvent)
    assert isinstance(body, InputEvent)
    assert record.features == body.features == {}


def _refused_on_both(raw: bytes) -> tuple[Rejection, InvalidBody]:
    record, body = parse_record(raw, 1 << 20, 1_000), _http(raw)
    assert isinstance(record, Rejection)
    assert isinstance(body, InvalidBody)
    return record, body


@pytest.mark.parametrize("raw", NOT_JSON_NUMBERS.values(), ids=NOT_JSON_NUMBERS.keys())
def test_nan_and_infinity_literals_are_not_json_on_either_door(raw: bytes) -> None:
    record, body = _refused_on_both(raw)
    assert record.kind is ErrorKind.INVALID_JSON
    assert "NaN and Infinity are not JSON numbers" in record.message
    assert "NaN and Infinity are not JSON numbers" in body.detail
    assert "line 1 column" in record.message


@pytest.mark.parametrize("raw", FEATURE_NOT_A_NUMBER.values(), ids=FEATURE_NOT_A_NUMBER.keys())
def test_nan_or_infinity_as_a_feature_names_the_feature_on_both_doors(raw: bytes) -> None:
    record, body = _refused_on_both(raw)
    assert record.kind is ErrorKind.INVALID_EVENT
    assert record.message.startswith("features.amount: ")
    assert [e.field for e in body.errors] == ["body.features.amount"]


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2026-11-25T10:00:00+05", "2026-11-25T05:00:00+00:00"),
        ("2026-11-25 10:00:00.5-03", "2026-11-25T13:00:00.500000+00:00"),
        ("2026-11-25T10:00:00+0530", "2026-11-25T04:30:00+00:00"),
    ],
)
def test_an_offset_of_hours_alone_is_read_on_both_doors(sent: str, utc: str) -> None:
    raw = json.dumps({**EVENT, "event_time": sent}).encode()
    record = parse_record(raw, 1 << 20, 1_000)
    body = _http(raw)
    listed, _ = parse_body(b"[" + raw + b"]", LIMITS)
    for event in (record, body, listed[0]):
        assert isinstance(event, InputEvent), event
        assert event.event_time is not None
        assert event.event_time.isoformat() == utc


def test_an_integer_too_large_for_a_double_is_worded_alike_on_both_doors() -> None:
    record, body = _refused_on_both(TEXT.replace("5.0", "9" * 400).encode())
    assert record.message == "features.amount: must be a finite number (integer too large)"
    assert body.errors[0].message == "must be a finite number (integer too large)"


def test_an_invalid_event_with_a_repeated_name_names_the_same_fields_on_both_doors() -> None:
    raw = b'{"event_id": "e", "entity_id": "u", "features": {"a": "x", "a": 1}, "event_time": 1}'
    record, body = _refused_on_both(raw)
    assert record.kind is ErrorKind.INVALID_EVENT
    assert [e.field for e in body.errors] == ["body.event_time"]
    assert record.message.startswith("event_time:")
    assert "features" not in record.message  # the earlier repeat is not what counts
