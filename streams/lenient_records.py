"""Reading record batches whose header keys are not UTF-8.

Kafka's protocol calls a header key a string, but producers written in Go or C can put any
bytes there. aiokafka decodes header keys strictly, inside its compiled record reader, so one
such record makes every fetch of its partition raise ``UnicodeDecodeError``: the partition can
never be read again. Headers are not part of the event contract, so such a record must be
scored (or dead-lettered) like any other.

:func:`install` replaces the record-set reader aiokafka's fetcher uses with one that hands out
aiokafka's own batches and, only for a batch whose header keys cannot be decoded, reads that
batch with the small v2 parser below (header keys decoded with ``surrogateescape``, so the
original bytes can be recovered with ``key.encode("utf-8", "surrogateescape")``). The cost on
the normal path is one wrapper object per record batch, not per record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as _fetcher
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
"""baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount."""
_LOG_OVERHEAD = 12  # baseOffset (8) + batchLength (4)
_MAGIC_AT = 16
_CODEC_MASK = 0x07
_LOG_APPEND_TIME = 0x08
_DECOMPRESS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}


@dataclass(frozen=True, slots=True)
class LenientRecord:
    """One record of a batch read by :func:`read_batch` (the attributes aiokafka reads)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def _bytes_field(buffer: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(buffer, pos)
    if length < 0:
        return None, pos
    end = pos + length
    if end > len(buffer):
        raise CorruptRecordException("record field runs past the end of its batch")
    return bytes(buffer[pos:end]), end


def read_batch(batch: bytes) -> list[LenientRecord]:
    """Every record of one v2 record batch; header keys that are not UTF-8 are kept as
    ``surrogateescape`` strings instead of failing the batch."""
    if len(batch) < _BATCH_HEADER.size:
        raise CorruptRecordException("record batch shorter than its header")
    (base_offset, _, _, magic, _, attributes, _, first_ts, max_ts, _, _, _, count) = (
        _BATCH_HEADER.unpack_from(batch)
    )
    if magic != 2:
        raise CorruptRecordException(f"unexpected record batch magic {magic}")
    body: bytes = bytes(batch[_BATCH_HEADER.size :])
    codec = attributes & _CODEC_MASK
    if codec:
        decompress = _DECOMPRESS.get(codec)
        if decompress is None:
            raise UnsupportedCodecError(f"unknown compression codec {codec}")
        body = decompress(body)
    log_append = bool(attributes & _LOG_APPEND_TIME)
    records: list[LenientRecord] = []
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(body, pos)
        end = pos + length
        ts_delta, pos = decode_varint(body, pos + 1)  # after the (unused) attributes byte
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes_field(body, pos)
        value, pos = _bytes_field(body, pos)
        header_count, pos = decode_varint(body, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            raw_key, pos = _bytes_field(body, pos)
            header_value, pos = _bytes_field(body, pos)
            name = (raw_key or b"").decode("utf-8", "surrogateescape")
            headers.append((name, header_value))
        if pos != end:
            raise CorruptRecordException("record length does not match its fields")
        records.append(
            LenientRecord(
                offset=base_offset + offset_delta,
                timestamp=max_ts if log_append else first_ts + ts_delta,
                timestamp_type=1 if log_append else 0,
                key=key,
                value=value,
                headers=headers,
            )
        )
    return records


class _LenientBatch:
    """aiokafka's batch, except that iterating it never fails on a header key's encoding."""

    __slots__ = ("_batch", "_raw")

    def __init__(self, batch: Any, raw: memoryview) -> None:
        self._batch = batch
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __next__(self) -> Any:  # control batches are read with next()
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        try:
            records: list[Any] = list(self._batch)
        except UnicodeDecodeError:
            records = list(read_batch(self._raw.tobytes()))
        return iter(records)


class LenientMemoryRecords:
    """aiokafka's ``MemoryRecords`` with :class:`_LenientBatch` batches (see the module)."""

    __slots__ = ("_data", "_pos", "_records")

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = data
        self._pos = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._pos
        (length,) = struct.unpack_from(">i", self._data, start + 8)
        self._pos = start + _LOG_OVERHEAD + length
        if self._data[start + _MAGIC_AT] < 2:
            return batch  # legacy formats have no headers
        return _LenientBatch(batch, memoryview(self._data)[start : self._pos])


def install() -> None:
    """Make aiokafka's fetcher read record sets through :class:`LenientMemoryRecords`."""
    if not hasattr(_fetcher, "MemoryRecords"):
        raise RuntimeError("aiokafka's fetcher no longer reads through MemoryRecords")
    _fetcher.MemoryRecords = LenientMemoryRecords


def installed() -> bool:
    return bool(_fetcher.MemoryRecords is LenientMemoryRecords)
