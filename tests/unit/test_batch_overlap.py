"""Batches scored in the background while the next one is parsed (``overlap``): order, retries
and halts, with a recording delivery and a feature source that can be held back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from scoring import EntityCache, ScoringPipeline, load_model
from scoring.feature_store import StoredFeatures
from streams.batch_processor import BatchProcessor
from streams.delivery_types import Acked, Batch, Commit, DeliveryStats
from streams.halts import Halted, HaltReason
from streams.metrics import StreamMetrics
from tests.support.helpers import MemoryFeatures
from tests.support.names import Names, settings_for

TOPIC = "in"


def record(offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    value = json.dumps(
        {"event_id": f"e-{partition}-{offset}", "entity_id": "user-1", "features": {}}
    ).encode()
    return ConsumerRecord(
        TOPIC, partition, offset, 1_764_064_800_000, 0, None, value, None, 0, len(value), ()
    )


class HeldFeatures(MemoryFeatures):
    """Answers only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__({"user-1": {"account_age_days": 3.0}})
        self.release = asyncio.Event()

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        await self.release.wait()
        return await super().fetch(entity_ids)


class RecordingDelivery:
    """Keeps what each batch delivers; fails the first ``failures`` calls unexpectedly."""

    def __init__(self, failures: int = 0) -> None:
        self.halted: Halted | None = None
        self.stats = DeliveryStats()
        self.delivered: list[list[str]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.failures = failures
        self.calls = 0

    def check(self) -> None:
        if self.halted is not None:
            raise self.halted

    def halt(self, error: BaseException) -> None:
        if self.halted is None:
            self.halted = (
                error
                if isinstance(error, Halted)
                else Halted(HaltReason.PREVIOUS_BATCH_FAILED, repr(error))
            )

    async def deliver(self, batch: Batch, commit: Commit, on_acked: Acked | None = None) -> None:
        self.check()
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("simulated bug in delivery")
        self.delivered.append(
            [json.loads(value or b"")["event_id"] for _, value, _, _ in batch.outputs]
        )
        if on_acked is not None:
            on_acked()
        await commit(batch.after)

    async def drain(self) -> None:
        return None


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def processor(
    names: Names,
    model_path: Path,
    features: MemoryFeatures,
    delivery: RecordingDelivery,
    executor: ThreadPoolExecutor,
    **stream: Any,
) -> BatchProcessor:
    settings = settings_for(
        names,
        model_path,
        stream={"retry_initial_backoff_s": 0.01, "retry_max_backoff_s": 0.02, **stream},
    )
    pipeline = ScoringPipeline(
        load_model(model_path), features, executor, cache=EntityCache(100, 60)
    )
    return BatchProcessor(
        pipeline, delivery, settings, asyncio.Event(), StreamMetrics(CollectorRegistry())
    )


async def test_the_next_batch_is_parsed_while_one_is_scored_and_order_is_kept(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    features, delivery = HeldFeatures(), RecordingDelivery()
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(offsets)

    batches = processor(names, model_path, features, delivery, executor)
    # The first batch waits on MongoDB in the background: the call returns anyway.
    await asyncio.wait_for(batches.process([record(0), record(1)], commit, overlap=True), 5)
    assert delivery.delivered == []
    # The second is parsed, then waits for the first to reach delivery before its own turn.
    second = asyncio.create_task(batches.process([record(2)], commit, overlap=True))
    await asyncio.sleep(0.2)
    assert not second.done()
    assert delivery.delivered == []
    features.release.set()
    await asyncio.wait_for(second, 5)
    await asyncio.wait_for(batches.drain(), 5)
    assert delivery.delivered == [["e-0-0", "e-0-1"], ["e-0-2"]]
    assert commits == [{TopicPartition(TOPIC, 0): 2}, {TopicPartition(TOPIC, 0): 3}]
    assert batches.stats.scored == 3
    assert batches.stats.retries == 0


async def test_once_stopping_a_batch_is_committed_within_the_call_not_in_the_background(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Shutdown closes the consumer when the handler returns: a batch that arrives while it
    drains must be delivered and committed before the call returns, or it would be read
    again after a restart (a SIGTERM must repeat nothing)."""
    features, delivery = HeldFeatures(), RecordingDelivery()
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.append(offsets)

    stopping = asyncio.Event()
    batches = processor(names, model_path, features, delivery, executor)
    batches._stopping = stopping
    await asyncio.wait_for(batches.process([record(0)], commit, overlap=True), 5)
    assert delivery.delivered == []  # in the background
    stopping.set()
    draining = asyncio.create_task(batches.drain())
    late = asyncio.create_task(batches.process([record(1)], commit, overlap=True))
    await asyncio.sleep(0.2)
    assert not late.done()  # waits for its own delivery, not only for the first batch's
    features.release.set()
    await asyncio.wait_for(late, 5)
    assert delivery.delivered == [["e-0-0"], ["e-0-1"]]
    assert commits == [{TopicPartition(TOPIC, 0): 1}, {TopicPartition(TOPIC, 0): 2}]
    await asyncio.wait_for(draining, 5)
    assert batches._background is None or batches._background.done()


async def test_without_overlap_the_call_returns_once_the_batch_is_delivered(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    features, delivery = HeldFeatures(), RecordingDelivery()

    async def commit(_offsets: dict[TopicPartition, int]) -> None:
        return None

    batches = processor(names, model_path, features, delivery, executor)
    call = asyncio.create_task(batches.process([record(0)], commit))
    await asyncio.sleep(0.2)
    assert not call.done()
    features.release.set()
    await asyncio.wait_for(call, 5)
    assert delivery.delivered == [["e-0-0"]]


async def test_an_unexpected_error_in_the_background_is_retried_there(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    features = MemoryFeatures({"user-1": {"account_age_days": 3.0}})
    delivery = RecordingDelivery(failures=2)
    halts: list[Halted] = []

    async def commit(_offsets: dict[TopicPartition, int]) -> None:
        return None

    batches = processor(names, model_path, features, delivery, executor)
    batches.on_halt = halts.append
    await batches.process([record(0, partition=1)], commit, overlap=True)
    await batches.process([record(1, partition=1)], commit, overlap=True)
    await asyncio.wait_for(batches.drain(), 5)
    # Delivered once each, in order: the failed attempts handed nothing over.
    assert delivery.delivered == [["e-1-0"], ["e-1-1"]]
    assert delivery.calls == 4
    assert batches.stats.retries == 2
    assert halts == []


async def test_repeated_failures_in_the_background_halt_and_nothing_later_is_delivered(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    features = MemoryFeatures({"user-1": {"account_age_days": 3.0}})
    delivery = RecordingDelivery(failures=100)
    halts: list[Halted] = []

    async def commit(_offsets: dict[TopicPartition, int]) -> None:
        return None

    batches = processor(names, model_path, features, delivery, executor, max_batch_attempts=3)
    batches.on_halt = halts.append
    await batches.process([record(5, partition=2), record(6, partition=2)], commit, overlap=True)
    await asyncio.wait_for(batches.drain(), 5)
    # The halt is told at once, naming the batch, without waiting for another call.
    assert [h.reason for h in halts] == [HaltReason.REPEATED_FAILURE]
    assert f"{TOPIC}[2]@5" in halts[0].detail
    assert "3 times" in halts[0].detail
    assert delivery.calls == 3
    with pytest.raises(Halted):
        await batches.process([record(7, partition=2)], commit, overlap=True)
    assert delivery.delivered == []
    assert delivery.calls == 3


class CountingDelivery(RecordingDelivery):
    """Counts each batch's outputs by topic (dead letters hold any bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_topic: dict[str, int] = {}

    async def deliver(self, batch: Batch, commit: Commit, on_acked: Acked | None = None) -> None:
        self.check()
        for topic, _, _, _ in batch.outputs:
            self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
        if on_acked is not None:
            on_acked()
        await commit(batch.after)


def raw_record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    size = -1 if value is None else len(value)
    return ConsumerRecord(TOPIC, 0, offset, 1_764_064_800_000, 0, b"k", value, None, 1, size, ())


async def test_tombstones_and_empty_values_are_dead_lettered_and_never_make_a_flood(
    names: Names, model_path: Path, executor: ThreadPoolExecutor
) -> None:
    features = MemoryFeatures({"user-1": {"account_age_days": 3.0}})
    delivery = CountingDelivery()

    async def commit(_offsets: dict[TopicPartition, int]) -> None:
        return None

    flood = {"dead_letter_window": 100, "dead_letter_min_records": 20}
    batches = processor(names, model_path, features, delivery, executor, **flood)
    settings = settings_for(names, model_path)
    for start in range(0, 600, 150):  # 600 records, none of them an event
        await batches.process(
            [raw_record(i, None if i % 2 else b"") for i in range(start, start + 150)], commit
        )
    await batches.process([record(600)], commit)
    assert delivery.by_topic == {settings.kafka.dlq_topic: 600, settings.kafka.output_topic: 1}
    assert batches.stats.dead_lettered == {"tombstone": 300, "empty_value": 300}

    # The same share of records that fail validation is a flood (a bad producer deploy).
    broken = processor(names, model_path, features, CountingDelivery(), executor, **flood)
    with pytest.raises(Halted) as halted:
        await broken.process([raw_record(i, b"{not json") for i in range(150)], commit)
    assert halted.value.reason is HaltReason.DEAD_LETTER_FLOOD
