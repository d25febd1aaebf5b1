"""The headers that say why a record was dead-lettered and where it came from."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from schemas import DeadLetterHeader
from streams.records import Rejection


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes], rejection: Rejection
) -> dict[str, str]:
    """Headers of the dead letter for ``record``; its value is the record's bytes, unchanged."""
    return {
        DeadLetterHeader.ERROR_KIND.value: rejection.kind.value,
        DeadLetterHeader.ERROR_MESSAGE.value: rejection.message,
        DeadLetterHeader.SOURCE_TOPIC.value: record.topic,
        DeadLetterHeader.SOURCE_PARTITION.value: str(record.partition),
        DeadLetterHeader.SOURCE_OFFSET.value: str(record.offset),
        DeadLetterHeader.SOURCE_TIMESTAMP.value: str(record.timestamp),
    }
