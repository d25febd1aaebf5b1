"""Dead letters: the original record, plus headers that say why and where it came from."""

from __future__ import annotations

from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord

from schemas import DeadLetterHeader
from streams.records import Rejection

Headers = list[tuple[str, bytes | None]]
"""Kafka record headers as aiokafka writes them: (name, value or None)."""

_CUT_HEADERS = {DeadLetterHeader.VALUE_TRUNCATED.value, DeadLetterHeader.VALUE_ORIGINAL_SIZE.value}
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
    """The dead letter, with its value cut to a prefix so the record fits ``limit`` bytes.

    A cut value carries ``streamscore.value.truncated: true`` and
    ``streamscore.value.original_size`` (kept from an earlier cut); the source position
    headers are always kept, so anyone can fetch the whole record from the input topic. If
    the record's own headers alone are too large, they are dropped too.
    """
    if value is None or record_size(key, value, headers) <= limit:
        return key, value, headers
    original = next(
        (v.decode() for k, v in headers if k == DeadLetterHeader.VALUE_ORIGINAL_SIZE and v),
        str(len(value)),
    )
    kept = [(k, v) for k, v in headers if k not in _CUT_HEADERS]
    cut_headers: Headers = [
        (DeadLetterHeader.VALUE_TRUNCATED.value, b"true"),
        (DeadLetterHeader.VALUE_ORIGINAL_SIZE.value, original.encode()),
    ]
    room = limit - record_size(key, b"", kept + cut_headers) - _VARINT_SLACK
    if room < 0:
        kept = [(k, v) for k, v in kept if k.startswith("streamscore.")]
        room = limit - record_size(key, b"", kept + cut_headers) - _VARINT_SLACK
    return key, value[: max(room, 0)], kept + cut_headers
