"""Reading record batches whose header keys are not UTF-8 (``streams.lenient_records``)."""

from __future__ import annotations

from typing import Any

import aiokafka.consumer.fetcher as fetcher
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from streams import fetch_guard, lenient_records
from streams.lenient_records import LenientMemoryRecords, read_batch

RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"user-1", b'{"event_id": "a"}', [("Xk", b"v"), ("null", None)]),
    (None, b"no key", []),
    (b"user-2", None, [("bin", b"\x00\xff\xfe")]),  # a tombstone with a binary header
]


def build(codec: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, (key, value, headers) in enumerate(RECORDS):
        builder.append(i, timestamp=1_764_000_000_000 + i, key=key, value=value, headers=headers)
    return bytes(builder.build())


def fields(record: Any) -> tuple[Any, ...]:
    return (
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        [tuple(h) for h in record.headers],
    )


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4], ids=["none", "gzip", "snappy", "lz4", "zstd"])
def test_reads_every_codec_like_aiokafka(codec: int) -> None:
    data = build(codec)
    theirs = [fields(r) for r in MemoryRecords(data).next_batch()]
    assert [fields(r) for r in read_batch(data)] == theirs
    assert [fields(r) for r in LenientMemoryRecords(data).next_batch()] == theirs


def test_a_header_key_that_is_not_utf8_is_read_instead_of_failing_the_batch() -> None:
    data = build(0).replace(b"Xk", b"\xffk")  # header names are not covered by anything we read
    with pytest.raises(UnicodeDecodeError):
        list(MemoryRecords(data).next_batch())
    records = LenientMemoryRecords(data)
    assert records.has_next()
    batch = list(records.next_batch())
    assert not records.has_next()
    assert [r.offset for r in batch] == [0, 1, 2]
    assert batch[0].headers[0] == ("\udcffk", b"v")
    assert batch[0].headers[0][0].encode("utf-8", "surrogateescape") == b"\xffk"
    assert batch[2].value is None
    assert batch[2].headers == [("bin", b"\x00\xff\xfe")]


def test_several_batches_are_sliced_in_step() -> None:
    first, second = build(0), build(3)
    records = LenientMemoryRecords(first + second)
    got = []
    while records.has_next():
        got.append([fields(r) for r in records.next_batch()])
    assert got == [[fields(r) for r in MemoryRecords(b).next_batch()] for b in (first, second)]


def test_the_scorer_installs_it_in_aiokafkas_fetcher() -> None:
    assert fetch_guard is not None  # importing the consumer guard installs the reader
    assert lenient_records.installed()
    assert fetcher.MemoryRecords is LenientMemoryRecords
