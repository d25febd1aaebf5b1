"""Offset arithmetic shared by the audit, the demo, the bench and the tests."""

from __future__ import annotations

from aiokafka import TopicPartition

from streams.offsets import (
    by_partition,
    end_offsets,
    lag,
    position_label,
    tail_start,
    unread,
)

A0, A1, A2 = (TopicPartition("a", p) for p in range(3))


class FakeConsumer:
    def __init__(self, ends: dict[TopicPartition, int], positions: dict[TopicPartition, int]):
        self.ends = ends
        self.positions = positions
        self.asked: list[list[TopicPartition]] = []

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked.append(partitions)
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]


async def test_end_offsets_of_the_given_partitions_and_none_asked_for_nothing() -> None:
    consumer = FakeConsumer({A0: 5, A1: 0, A2: 9}, {})

    assert await end_offsets(consumer, [A0, A1]) == {A0: 5, A1: 0}
    assert await end_offsets(consumer, []) == {}
    assert consumer.asked == [[A0, A1]]


async def test_unread_partitions_are_those_behind_their_end() -> None:
    consumer = FakeConsumer({}, {A0: 5, A1: 3, A2: 0})

    assert await unread(consumer, {A0: 5, A1: 4, A2: 0}) == {A1}


def test_by_partition_lag_and_tail() -> None:
    assert by_partition({A0: 7, A2: 1}) == {0: 7, 2: 1}
    assert lag({A0: 10, A1: 4, A2: 0}, {A0: 7, A1: None}) == {0: 3, 1: 4, 2: 0}
    assert [tail_start(10, 3), tail_start(2, 3), tail_start(0, 3)] == [7, 0, 0]
    assert position_label("events", 2, 1041) == "events[2]@1041"
