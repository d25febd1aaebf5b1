"""Exactly-once delivery when a partition's transactional producer is fenced or breaks: the
process gives the partition up and asks the group again, and never starts a producer outside
an assignment (which would fence the partition's new owner)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerFenced
from aiokafka.structs import TopicPartition

from settings import load_settings
from streams.delivery_types import Batch, Output
from streams.transactions import PartitionProducers, TransactionAborted, TransactionalDelivery

TP = TopicPartition("events", 0)


class FakeProducer:
    def __init__(self, commit_error: Exception | None, abort_error: Exception | None) -> None:
        self.commit_error, self.abort_error = commit_error, abort_error
        self.committed = 0

    async def begin_transaction(self) -> None:
        return None

    async def send_offsets_to_transaction(self, *_args: Any) -> None:
        return None

    async def commit_transaction(self) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.committed += 1

    async def abort_transaction(self) -> None:
        if self.abort_error is not None:
            raise self.abort_error

    async def stop(self) -> None:
        return None


class FakeSender:
    async def send_many(self, _outputs: Sequence[Output], _indexes: Iterable[int]) -> list[Any]:
        return []


class FakeCoordinator:
    def __init__(self) -> None:
        self.rejoins = 0

    def request_rejoin(self) -> None:
        self.rejoins += 1


class FakeConsumer:
    def __init__(self) -> None:
        self._coordinator = FakeCoordinator()
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def committed(self, _tp: TopicPartition) -> int:
        return 10

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def delivery(
    monkeypatch: pytest.MonkeyPatch, commit_error: Exception | None, abort_error: Exception | None
) -> tuple[TransactionalDelivery, list[TopicPartition]]:
    """A delivery whose producers are fakes; the list grows by one per producer start (each
    start is an InitProducerId: it fences every older producer of the partition)."""
    starts: list[TopicPartition] = []

    async def start(self: PartitionProducers, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            starts.append(tp)
            self._producers[tp] = FakeProducer(commit_error, abort_error)
            self._outputs[tp] = FakeSender()  # type: ignore[assignment]

    monkeypatch.setattr(PartitionProducers, "start", start)
    settings = load_settings(stream={"delivery": "exactly_once", "metrics_port": None})
    return TransactionalDelivery(settings, asyncio.Event()), starts


BATCH = Batch([("predictions", b"{}", b"k", None)], [TP], {TP: 10}, {TP: 11})


@pytest.mark.parametrize(
    ("commit_error", "abort_error"),
    [(ProducerFenced(), None), (KafkaConnectionError(), KafkaConnectionError())],
    ids=["fenced", "abort failed"],
)
async def test_a_fenced_or_broken_producer_gives_its_partition_up_and_asks_the_group(
    monkeypatch: pytest.MonkeyPatch, commit_error: Exception, abort_error: Exception | None
) -> None:
    transactions, starts = delivery(monkeypatch, commit_error, abort_error)
    consumer = FakeConsumer()
    await transactions.on_assigned(consumer, [TP])
    assert starts == [TP]
    assert consumer.seeks == [(TP, 10)]

    with pytest.raises(TransactionAborted) as aborted:
        await transactions.deliver(BATCH, commit=None)  # type: ignore[arg-type]
    assert aborted.value.rewind == {TP: 10}
    assert consumer._coordinator.rejoins == 1

    # The retry starts no producer (no fence of whoever owns the partition now) and commits
    # nothing for it: its owner, or this process once assigned it again, reads it.
    for _ in range(3):
        await transactions.deliver(BATCH, commit=None)  # type: ignore[arg-type]
    assert starts == [TP]
    assert TP not in transactions.stats.committed

    # Assigned here again by the group: now the producer starts, and the offset is re-read.
    await transactions.on_assigned(consumer, [TP])
    assert starts == [TP, TP]
    assert consumer.seeks == [(TP, 10), (TP, 10)]


async def test_a_producer_that_cannot_start_at_assignment_is_not_committed_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing_start(self: PartitionProducers, tps: Iterable[TopicPartition]) -> None:
        raise KafkaConnectionError()

    transactions, starts = delivery(monkeypatch, None, None)
    monkeypatch.setattr(PartitionProducers, "start", failing_start)
    consumer = FakeConsumer()
    with pytest.raises(KafkaConnectionError):
        await transactions.on_assigned(consumer, [TP])
    assert consumer.seeks == []
    assert consumer._coordinator.rejoins == 1
    await transactions.deliver(BATCH, commit=None)  # type: ignore[arg-type]
    assert TP not in transactions.stats.committed
    assert starts == []


class GuardedFakeConsumer(FakeConsumer):
    """A consumer whose fetch guard counts rebalances, as the scorer's does."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = type("Guard", (), {"rebalances": 0})()


async def test_a_batch_fetched_before_a_rebalance_is_not_committed_but_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance while a batch is scored (MongoDB slow or away) gives this process the
    partition again and reads its committed offset afresh: committing the batch fetched
    before would repeat every record read from there."""
    transactions, _ = delivery(monkeypatch, None, None)
    consumer = GuardedFakeConsumer()
    consumer.guard.rebalances = 2
    await transactions.on_assigned(consumer, [TP])
    transactions.fetched_at = 2  # fetched after that assignment
    consumer.guard.rebalances = 4  # revoked and assigned again while it was scored
    await transactions.on_assigned(consumer, [TP])
    producer = transactions._producers.get(TP)
    assert isinstance(producer, FakeProducer)
    consumer.seeks.clear()

    delivered: list[Any] = []
    await transactions.deliver(BATCH, None, delivered.append)  # type: ignore[arg-type]
    assert producer.committed == 0
    assert TP not in transactions.stats.committed
    assert consumer.seeks == [(TP, 10)]  # read again from the committed offset
    assert delivered == [frozenset()]  # its events are not counted as delivered

    transactions.fetched_at = 4  # the batch read again after the assignment commits
    await transactions.deliver(BATCH, None, delivered.append)  # type: ignore[arg-type]
    assert delivered[-1] == frozenset({TP})
    assert producer.committed == 1
    assert transactions.stats.committed[TP] == 11
