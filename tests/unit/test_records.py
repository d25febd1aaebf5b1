"""Raw record bytes -> event or rejection, record timestamps, and dead letters."""

from __future__ import annotations

import json

import pytest
from aiokafka.structs import ConsumerRecord

from schemas import ErrorKind, InputEvent
from streams.dead_letters import dead_letter, fit_dead_letter, record_size
from streams.records import Rejection, parse_record, record_time

LIMIT = 1_000


@pytest.mark.parametrize(
    ("value", "kind", "says"),
    [
        (None, ErrorKind.TOMBSTONE, "tombstone"),
        (b"", ErrorKind.EMPTY_VALUE, "empty"),
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


def _record(
    value: bytes | None,
    key: bytes | None = b"user-1",
    headers: list[tuple[str, bytes | None]] | None = None,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="events",
        partition=3,
        offset=1234,
        timestamp=1_764_064_800_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=6,
        serialized_value_size=len(value or b""),
        headers=headers or [],
    )


def test_dead_letter_keeps_the_record_and_names_reason_and_source() -> None:
    original = [("trace", None), ("bin", b"\xff\x00"), ("\udcffk", b"v")]
    key, value, headers = dead_letter(
        _record(b"not json", headers=original),
        Rejection(ErrorKind.INVALID_JSON, "not valid JSON"),
    )
    assert (key, value) == (b"user-1", b"not json")
    # The record's own headers first and unchanged (a name that was not UTF-8 is escaped).
    assert headers[:3] == [("trace", None), ("bin", b"\xff\x00"), ("\\xffk", b"v")]
    assert dict(headers[3:]) == {
        "streamscore.error.kind": b"invalid_json",
        "streamscore.error.message": b"not valid JSON",
        "streamscore.source.topic": b"events",
        "streamscore.source.partition": b"3",
        "streamscore.source.offset": b"1234",
        "streamscore.source.timestamp": b"1764064800000",
    }


def test_tombstone_dead_letter_keeps_its_null_value_unless_it_has_no_key() -> None:
    reason = Rejection(ErrorKind.TOMBSTONE, "null")
    assert dead_letter(_record(None), reason)[:2] == (b"user-1", None)
    assert dead_letter(_record(None, key=None), reason)[:2] == (None, b"")


def test_a_dead_letter_that_fits_is_unchanged() -> None:
    key, value, headers = dead_letter(_record(b"x" * 100), Rejection(ErrorKind.INVALID_JSON, "m"))
    assert fit_dead_letter(key, value, headers, 1_048_576) == (key, value, headers)


@pytest.mark.parametrize("limit", [1_024, 10_000, 1_048_576])
def test_a_dead_letter_too_large_is_cut_to_fit_and_says_so(limit: int) -> None:
    original = b"{" + b"x" * 1_048_576
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(original), Rejection(ErrorKind.INVALID_JSON, "m")), limit
    )
    assert value is not None
    assert record_size(key, value, headers) <= limit
    assert limit - record_size(key, value, headers) < 64  # as much of the value as fits
    assert original.startswith(value)
    names = dict(headers)
    assert names["streamscore.value.truncated"] == b"true"
    assert names["streamscore.value.original_size"] == str(len(original)).encode()
    assert names["streamscore.source.offset"] == b"1234"
    # Cutting again (e.g. the broker's limit is lower) keeps the original size.
    _, again, headers2 = fit_dead_letter(key, value, headers, limit // 2)
    assert again is not None
    assert len(again) < len(value)
    assert dict(headers2)["streamscore.value.original_size"] == str(len(original)).encode()
    assert [k for k, _ in headers2].count("streamscore.value.truncated") == 1


def test_record_headers_too_large_to_fit_are_dropped_but_the_source_is_kept() -> None:
    big: list[tuple[str, bytes | None]] = [(f"h{i}", b"v" * 1_000) for i in range(50)]
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(b"x" * 10, headers=big), Rejection(ErrorKind.INVALID_JSON, "m")),
        4_096,
    )
    assert record_size(key, value, headers) <= 4_096
    assert not any(k.startswith("h") for k, _ in headers)
    assert dict(headers)["streamscore.source.partition"] == b"3"


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(None, None), (-1, None), (0, "1970-01-01T00:00:00+00:00"), (1_000, "1970-01-01T00:00:01")],
)
def test_record_time(timestamp: int | None, expected: str | None) -> None:
    result = record_time(timestamp)
    assert (result.isoformat() if result else None) == expected or (
        result is not None and expected is not None and result.isoformat().startswith(expected)
    )


@pytest.mark.parametrize("timestamp", [253_402_300_800_000, 2**63 - 1])
def test_record_time_past_year_9999_is_a_value_error(timestamp: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        record_time(timestamp)


def test_an_event_over_the_features_cap_is_invalid_naming_features() -> None:
    value = json.dumps(
        {"event_id": "e", "entity_id": "u", "features": {f"f{i}": i for i in range(11)}}
    ).encode()
    assert isinstance(parse_record(value, 10**6, max_features=11), InputEvent)
    result = parse_record(value, 10**6, max_features=10)
    assert isinstance(result, Rejection)
    assert result.kind is ErrorKind.INVALID_EVENT
    assert result.message.startswith("features:")
    assert "at most 10 features" in result.message
