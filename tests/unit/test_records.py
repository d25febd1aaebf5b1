"""Raw record bytes -> event or rejection, and the dead-letter headers."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from schemas import ErrorKind, InputEvent
from streams.dead_letters import dead_letter_headers
from streams.records import Rejection, parse_record

LIMIT = 1_000


@pytest.mark.parametrize(
    ("value", "kind", "says"),
    [
        (None, ErrorKind.EMPTY_VALUE, "no value"),
        (b"", ErrorKind.EMPTY_VALUE, "no value"),
        (b"x" * (LIMIT + 1), ErrorKind.TOO_LARGE, "limit is 1000"),
        (b"\xff\xfe{}", ErrorKind.INVALID_ENCODING, "not UTF-8"),
        (b"not json", ErrorKind.INVALID_JSON, "not valid JSON"),
        (b'{"event_id": "e", ', ErrorKind.INVALID_JSON, "not valid JSON"),
        (b"[1, 2]", ErrorKind.INVALID_EVENT, "JSON object"),
        (b"null", ErrorKind.INVALID_EVENT, "JSON object"),
        (b'"a string"', ErrorKind.INVALID_EVENT, "JSON object"),
        (b'{"event_id": "e"}', ErrorKind.INVALID_EVENT, "entity_id"),
        (b'{"event_id": "e", "entity_id": {"$ne": null}}', ErrorKind.INVALID_EVENT, "entity_id"),
        (
            b'{"event_id": "e", "entity_id": "u", "features": {"amount": NaN}}',
            ErrorKind.INVALID_EVENT,
            "features.amount",
        ),
        (b"[" * 100_000 + b"]" * 100_000, None, ""),
        (
            b'{"event_id": "e", "entity_id": "u", "event_time": "0001-01-01T00:00:00+01:00"}',
            ErrorKind.INVALID_EVENT,
            "event_time",
        ),
        (
            b'{"event_id": "e", "entity_id": "u", "event_time": "9999-12-31T23:59:59-01:00"}',
            ErrorKind.INVALID_EVENT,
            "out of range",
        ),
    ],
)
def test_bad_values_are_rejected_with_a_reason(
    value: bytes | None, kind: ErrorKind | None, says: str
) -> None:
    result = parse_record(value, LIMIT if kind is ErrorKind.TOO_LARGE else 10**7)
    assert isinstance(result, Rejection)
    if kind is not None:
        assert result.kind is kind
    assert says in result.message


def test_valid_value_is_parsed() -> None:
    result = parse_record(b'{"event_id":"e","entity_id":"u","features":{"a":1}}', LIMIT)
    assert isinstance(result, InputEvent)
    assert result.features == {"a": 1.0}


def test_dead_letter_headers_name_reason_and_source() -> None:
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic="events",
        partition=3,
        offset=1234,
        timestamp=1_764_064_800_000,
        timestamp_type=0,
        key=b"user-1",
        value=b"not json",
        checksum=None,
        serialized_key_size=6,
        serialized_value_size=8,
        headers=[],
    )
    headers = dead_letter_headers(record, Rejection(ErrorKind.INVALID_JSON, "not valid JSON"))
    assert headers == {
        "streamscore.error.kind": "invalid_json",
        "streamscore.error.message": "not valid JSON",
        "streamscore.source.topic": "events",
        "streamscore.source.partition": "3",
        "streamscore.source.offset": "1234",
        "streamscore.source.timestamp": "1764064800000",
    }
    assert all(type(k) is str and type(v) is str for k, v in headers.items())
