"""Raw record bytes -> event or rejection, record timestamps, and dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
        # UTF-16/32 without a byte order mark is valid UTF-8 (ASCII and NUL bytes), never JSON
        (
            '{"event_id": "e", "entity_id": "u"}'.encode("utf-16-le"),
            ErrorKind.INVALID_ENCODING,
            "UTF-16",
        ),
        (
            '{"event_id": "e", "entity_id": "u"}'.encode("utf-32-be"),
            ErrorKind.INVALID_ENCODING,
            "UTF-16",
        ),
        (
            b'{"event_id": "e\x00", "entity_id": "u"}',
            ErrorKind.INVALID_ENCODING,
            "NUL byte at byte 15",
        ),
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


def test_record_headers_too_large_to_fit_are_dropped_and_counted_the_value_kept_whole() -> None:
    big: list[tuple[str, bytes | None]] = [(f"h{i}", b"v" * 1_000) for i in range(50)]
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(b"not json", headers=big), Rejection(ErrorKind.INVALID_JSON, "m")),
        4_096,
    )
    assert record_size(key, value, headers) <= 4_096
    assert (key, value) == (b"user-1", b"not json")  # nothing of these was cut
    assert not any(k.startswith("h") for k, _ in headers)
    names = dict(headers)
    assert names["streamscore.headers.dropped"] == b"50"
    assert names["streamscore.source.partition"] == b"3"
    assert "streamscore.value.truncated" not in names
    assert "streamscore.key.truncated" not in names


def test_dropped_headers_and_a_value_still_too_large_are_both_said() -> None:
    big: list[tuple[str, bytes | None]] = [("h", b"v" * 5_000)]
    original = b"x" * 5_000
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(original, headers=big), Rejection(ErrorKind.INVALID_JSON, "m")),
        4_096,
    )
    assert record_size(key, value, headers) <= 4_096
    assert value is not None
    assert 0 < len(value) < len(original)
    assert original.startswith(value)
    names = dict(headers)
    assert names["streamscore.headers.dropped"] == b"1"
    assert names["streamscore.value.truncated"] == b"true"
    assert names["streamscore.value.original_size"] == b"5000"


@pytest.mark.parametrize("value", [b"x", None, b"y" * 3_000, b"z" * 5_000])
def test_a_key_too_large_for_the_limit_is_cut_and_said_never_left_to_stop_the_scorer(
    value: bytes | None,
) -> None:
    big_key = b"k" * 10_000
    key, cut, headers = fit_dead_letter(
        *dead_letter(_record(value, key=big_key), Rejection(ErrorKind.INVALID_JSON, "m")),
        4_096,
    )
    assert record_size(key, cut, headers) <= 4_096
    assert key is not None
    assert 0 < len(key) < len(big_key)
    assert big_key.startswith(key)
    names = dict(headers)
    assert names["streamscore.key.truncated"] == b"true"
    assert names["streamscore.key.original_size"] == b"10000"
    assert names["streamscore.source.offset"] == b"1234"
    if value is None or len(value) < 4_096:  # the key makes room: the value stays whole
        assert cut == value  # (a tombstone stays a tombstone)
        assert "streamscore.value.truncated" not in names
    else:  # the value alone is over the limit: it is cut, and says so
        assert cut == b""
        assert names["streamscore.value.original_size"] == str(len(value)).encode()


def test_cutting_again_keeps_every_earlier_size_and_count() -> None:
    big: list[tuple[str, bytes | None]] = [("h", b"v" * 5_000), ("g", None)]
    first = fit_dead_letter(
        *dead_letter(
            _record(b"z" * 3_000, key=b"k" * 3_000, headers=big),
            Rejection(ErrorKind.INVALID_JSON, "m"),
        ),
        4_096,
    )
    again = fit_dead_letter(*first, record_size(*first) // 2)
    assert record_size(*again) <= record_size(*first) // 2
    names = dict(again[2])
    assert names["streamscore.headers.dropped"] == b"2"
    assert names["streamscore.value.original_size"] == b"3000"
    assert names["streamscore.key.original_size"] == b"3000"
    assert [k for k, _ in again[2]].count("streamscore.value.truncated") == 1


def test_our_header_names_on_the_record_itself_are_its_own() -> None:
    """A record replayed from the dead-letter topic carries our names: they are its own
    headers, dropped with the others when they do not fit; ours are the last of each name."""
    replayed: list[tuple[str, bytes | None]] = [
        ("streamscore.error.message", b"m" * 5_000),
        ("streamscore.source.offset", b"7"),
    ]
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(b"v", headers=replayed), Rejection(ErrorKind.INVALID_JSON, "new")),
        4_096,
    )
    assert record_size(key, value, headers) <= 4_096
    names = dict(headers)
    assert names["streamscore.error.message"] == b"new"
    assert names["streamscore.source.offset"] == b"1234"
    assert names["streamscore.headers.dropped"] == b"2"
    assert value == b"v"
    assert "streamscore.value.truncated" not in names


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [(None, None), (-1, None), (0, "1970-01-01T00:00:00+00:00"), (1_000, "1970-01-01T00:00:01")],
)
def test_record_time(timestamp: int | None, expected: str | None) -> None:
    result = record_time(timestamp)
    assert (result.isoformat() if result else None) == expected or (
        result is not None and expected is not None and result.isoformat().startswith(expected)
    )


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (253_402_300_799_999, datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
        (8_000_000_000_001, datetime(2223, 7, 6, 14, 13, 20, 1_000, tzinfo=UTC)),
        (-5, datetime(1969, 12, 31, 23, 59, 59, 995_000, tzinfo=UTC)),
        (-62_135_596_800_000, datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_record_time_is_exact_to_the_millisecond_far_from_1970(
    timestamp: int, expected: datetime
) -> None:
    """A float division lost the last millisecond past ~2200 (9999-12-31T23:59:59.998993Z);
    only -1 means "no timestamp": another negative value is a time before 1970."""
    assert record_time(timestamp) == expected


@pytest.mark.parametrize(
    "timestamp", [253_402_300_800_000, 2**63 - 1, -62_135_596_800_001, -(2**63)]
)
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


def test_a_producer_header_named_like_ours_is_its_own_and_cannot_break_the_fit() -> None:
    own: list[tuple[str, bytes | None]] = [
        ("streamscore.headers.dropped", b"n/a"),
        ("streamscore.value.truncated", b"true"),
        ("blob", b"H" * 1_048_400),
    ]
    key, value, headers = fit_dead_letter(
        *dead_letter(_record(b"x", key=None, headers=own), Rejection(ErrorKind.INVALID_JSON, "m")),
        1_048_576,
    )
    assert record_size(key, value, headers) <= 1_048_576
    names = dict(headers)
    assert names["streamscore.headers.dropped"] == b"3"
    assert value == b"x"
    assert "streamscore.value.truncated" not in names  # the producer's, dropped with the rest


def test_a_second_cut_keeps_the_marks_of_an_emptied_value() -> None:
    first = fit_dead_letter(
        *dead_letter(
            _record(b"v" * 5_000, key=b"k" * 10_000), Rejection(ErrorKind.INVALID_JSON, "m")
        ),
        4_096,
    )
    assert first[1] == b""
    again = fit_dead_letter(*first, record_size(*first) // 2)
    assert record_size(*again) <= record_size(*first) // 2
    names = dict(again[2])
    assert names["streamscore.value.truncated"] == b"true"
    assert names["streamscore.value.original_size"] == b"5000"
    assert names["streamscore.key.original_size"] == b"10000"
