"""Kafka offsets and partitions: the arithmetic the audit, the demo, the bench and the tests share.

Offsets are Kafka's: an end offset is the offset the next record will get (so it counts the
records a partition ever held), a committed offset is the next record the group will read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition

from settings import KafkaSettings
from streams.topics import partitions_of


class OffsetReader(Protocol):
    """The part of a Kafka consumer these helpers use (``AIOKafkaConsumer`` has it)."""

    async def end_offsets(self, partitions: list[TopicPartition]) -> Any: ...

    async def position(self, partition: TopicPartition) -> int: ...


async def topic_partitions(kafka: KafkaSettings, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` in the cluster, topic by topic (none for an absent one)."""
    known = await partitions_of(kafka, list(topics))
    return [TopicPartition(topic, p) for topic in topics for p in known[topic]]


async def end_offsets(
    consumer: OffsetReader, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The end offset of each partition (for a ``read_committed`` consumer: its last stable
    offset, so open transactions are not waited for)."""
    wanted = list(partitions)
    if not wanted:
        return {}
    ends = await consumer.end_offsets(wanted)
    return {tp: int(ends[tp]) for tp in wanted}


async def first_offsets(kafka: KafkaSettings, topic: str) -> dict[TopicPartition, int]:
    """The offset of the oldest record each partition of ``topic`` still holds (above 0 once
    retention or a deletion removed older ones)."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka_options import client_options

    partitions = await topic_partitions(kafka, [topic])
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(partitions)
        return {tp: int(starts[tp]) for tp in partitions}
    finally:
        await consumer.stop()


async def unread(consumer: OffsetReader, ends: Mapping[TopicPartition, int]) -> set[TopicPartition]:
    """The partitions whose read position has not reached the given end yet."""
    return {tp for tp, end in ends.items() if await consumer.position(tp) < end}


def by_partition(offsets: Mapping[TopicPartition, int]) -> dict[int, int]:
    """``{TopicPartition(t, 3): 10}`` → ``{3: 10}`` (offsets of one topic)."""
    return {tp.partition: offset for tp, offset in offsets.items()}


def lag(
    ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]
) -> dict[int, int]:
    """Per partition: records not yet committed (a partition never committed lags by all)."""
    return {tp.partition: end - (committed.get(tp) or 0) for tp, end in ends.items()}


def tail_start(end: int, count: int) -> int:
    """Where to seek to read the last ``count`` records of a partition ending at ``end``."""
    return max(0, end - count)


def position_label(topic: str, partition: int, offset: int) -> str:
    """``events[2]@1041``: one record's place, as logs and reports print it."""
    return f"{topic}[{partition}]@{offset}"
