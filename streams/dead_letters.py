"""Dead letters: the original record, plus headers that say why and where it came from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord

from schemas import DeadLetterHeader
from streams.records import Rejection

Headers = list[tuple[str, bytes | None]]
"""Kafka record headers as aiokafka writes them: (name, value or None)."""

_VARINT_SLACK = 5
"""A value's length prefix is a varint of up to 5 bytes; estimates assume 1."""


def _writable_name(name: str) -> str:
    """Header names read as bytes that are not UTF-8 (see ``lenient_records``) cannot be
    written back as they were: they are written with backslash escapes (``\\xff``)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def dead_letter(
    record: ConsumerRecord[Any, Any], rejection: Rejection
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the dead letter for ``record``.

    1. Key and value are the record's own bytes, unchanged (a null value stays null, except
       that a record with neither key nor value gets an empty value: Kafka clients refuse to
       send a record with neither).
    2. The record's headers come first, unchanged (null and binary values included), then the
       ``streamscore.*`` headers naming the error and the source position.
    """
    key = record.key if isinstance(record.key, bytes) else None
    value = record.value if isinstance(record.value, bytes) else None
    if key is None and value is None:
        value = b""
    headers: Headers = [(_writable_name(str(k)), v) for k, v in record.headers or ()]
    headers.extend(
        (name.value, text.encode("utf-8", "backslashreplace"))
        for name, text in (
            (DeadLetterHeader.ERROR_KIND, rejection.kind.value),
            (DeadLetterHeader.ERROR_MESSAGE, rejection.message),
            (DeadLetterHeader.SOURCE_TOPIC, record.topic),
            (DeadLetterHeader.SOURCE_PARTITION, str(record.partition)),
            (DeadLetterHeader.SOURCE_OFFSET, str(record.offset)),
            (DeadLetterHeader.SOURCE_TIMESTAMP, str(record.timestamp)),
        )
    )
    return key, value, headers


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The size the producer checks against ``max_request_size`` for one record."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter, cut so that the record fits ``limit`` bytes; unchanged if it fits.

    What is cut, in this order, and only as far as needed:
    1. the value, to a prefix (``streamscore.value.truncated: true`` and
       ``streamscore.value.original_size``);
    2. if the record's own headers do not fit beside the key, all of them
       (``streamscore.headers.dropped``: how many), and the value only if it still does not fit;
    3. if the key alone does not fit, the key, to a prefix (``streamscore.key.truncated``,
       ``streamscore.key.original_size``), and the value to what room is left.
    Original sizes and counts from an earlier cut are kept (a dead letter cut again because
    the broker's limit is lower). The ``streamscore.*`` headers naming the error and the
    source position are always kept, so anyone can fetch the whole record from the input
    topic. The marks are only ever set on what was actually cut.
    """
    if record_size(key, value, headers) <= limit:
        return key, value, headers
    own, marks = _split(headers)
    value_marks = _cut_marks(
        marks, DeadLetterHeader.VALUE_TRUNCATED, DeadLetterHeader.VALUE_ORIGINAL_SIZE, value
    )
    cut_before = DeadLetterHeader.VALUE_TRUNCATED.value in marks
    # 1. The value only.
    fitted = _fit_value(
        key, value, own + _without(marks, _VALUE_MARKS), value_marks, limit, cut_before
    )
    if fitted is not None:
        return fitted
    # 2. Without the record's own headers.
    dropped = _count(marks.get(DeadLetterHeader.HEADERS_DROPPED.value)) + len(own)
    base = _without(marks, {DeadLetterHeader.HEADERS_DROPPED.value, *_VALUE_MARKS})
    if dropped:
        base.append((DeadLetterHeader.HEADERS_DROPPED.value, str(dropped).encode()))
    fitted = _fit_value(key, value, base, value_marks, limit, cut_before)
    if fitted is not None:
        return fitted
    if not key:  # nothing left to cut but the value: as small as this dead letter gets
        marked = base + value_marks if value or cut_before else base
        return key, value[:0] if value is not None else None, marked
    # 3. The key too, as far as needed: the value whole if the key can make room for it,
    # else empty.
    key_marks = _cut_marks(
        marks, DeadLetterHeader.KEY_TRUNCATED, DeadLetterHeader.KEY_ORIGINAL_SIZE, key
    )
    base = _without(base, _KEY_MARKS) + key_marks
    whole = base + value_marks if cut_before else base
    room = limit - record_size(b"", value, whole) - _VARINT_SLACK
    if room > 0 or value is None:
        return key[: max(room, 0)], value, whole
    empty = value[:0]
    marked = base + value_marks if value or cut_before else base
    room = limit - record_size(b"", empty, marked) - _VARINT_SLACK
    return key[: max(room, 0)], empty, marked


_VALUE_MARKS = {DeadLetterHeader.VALUE_TRUNCATED.value, DeadLetterHeader.VALUE_ORIGINAL_SIZE.value}
_KEY_MARKS = {DeadLetterHeader.KEY_TRUNCATED.value, DeadLetterHeader.KEY_ORIGINAL_SIZE.value}
_OURS = frozenset(h.value for h in DeadLetterHeader)


def _split(headers: Headers) -> tuple[Headers, dict[str, bytes | None]]:
    """(the record's own headers, ours by name). Ours are those from the last
    ``streamscore.error.kind`` on (:func:`dead_letter` appends them, with that one first, and
    a cut adds its marks after them): any before it, e.g. on a record replayed from the
    dead-letter topic or set by a producer, are the record's own."""
    kind = DeadLetterHeader.ERROR_KIND.value
    starts = [i for i, (name, _) in enumerate(headers) if name == kind]
    if not starts:
        return list(headers), {}
    first = starts[-1]
    ours = {name: v for name, v in headers[first:] if name in _OURS}
    return list(headers[:first]), ours


def _count(value: bytes | None) -> int:
    """A count this module wrote (0 if it is missing or not a count)."""
    text = (value or b"").decode("ascii", "replace")
    return int(text) if text.isdigit() else 0


def _without(marks: dict[str, bytes | None] | Headers, names: set[str]) -> Headers:
    items = marks.items() if isinstance(marks, dict) else marks
    return [(k, v) for k, v in items if k not in names]


def _cut_marks(
    marks: dict[str, bytes | None],
    truncated: DeadLetterHeader,
    original_size: DeadLetterHeader,
    data: bytes | None,
) -> Headers:
    """The two headers that say a field was cut, keeping the size from an earlier cut."""
    size = marks.get(original_size.value) or str(len(data or b"")).encode()
    return [(truncated.value, b"true"), (original_size.value, size)]


def _fit_value(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    value_marks: Headers,
    limit: int,
    cut_before: bool,
) -> tuple[bytes | None, bytes | None, Headers] | None:
    """The record with ``headers`` and as much of the value as fits (marked when cut now or
    ``cut_before``); None when the key and headers alone do not fit."""
    whole = headers + value_marks if cut_before else headers
    if record_size(key, value, whole) <= limit:
        return key, value, whole
    if value is None:
        return None
    room = limit - record_size(key, b"", headers + value_marks) - _VARINT_SLACK
    if room < 0:
        return None
    return key, value[:room], headers + value_marks


def describe_output(output: tuple[str, bytes | None, bytes | None, Headers | None]) -> str:
    """Where an output goes and what it is, for a log line or a halt: its topic, size and key,
    and for a dead letter the input record it stands for."""
    topic, value, key, headers = output
    try:
        size = f"{record_size(key, value, headers or [])} bytes"
    except Exception:  # a header name no client can write: the size is not known
        size = "size unknown"
    text = f"to {topic}, {size}, key {key[:64]!r}" if key else f"to {topic}, {size}"
    names = dict(headers or [])
    source = [
        names.get(h.value)
        for h in (
            DeadLetterHeader.SOURCE_TOPIC,
            DeadLetterHeader.SOURCE_PARTITION,
            DeadLetterHeader.SOURCE_OFFSET,
        )
    ]
    if all(source):
        src_topic, partition, offset = (s.decode("utf-8", "replace") for s in source if s)
        text += f", the dead letter of {src_topic} partition {partition} offset {offset}"
    return text


OutputRecord = tuple[str, bytes | None, bytes | None, Headers | None]
"""(topic, value, key, headers), as delivery holds one."""


def largest_dead_letter(outputs: Sequence[OutputRecord], dlq_topic: str) -> int:
    """The size of the largest dead letter among ``outputs`` (0 when there is none)."""
    sizes = (
        record_size(key, value, headers or [])
        for topic, value, key, headers in outputs
        if topic == dlq_topic
    )
    return max(sizes, default=0)
