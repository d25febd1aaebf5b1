"""What the batch processor does when Kafka refuses an output: cut a dead letter that is too
large, never re-send forever an error that retrying cannot fix, never commit past it."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord, TopicPartition

from scoring import LoadedModel, ScoringPipeline
from settings import load_settings
from streams.batch_processor import BatchProcessor
from streams.exit_codes import ExitCode
from tests.support import MemoryFeatures, event_bytes


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="events",
        partition=0,
        offset=offset,
        timestamp=1_764_000_000_000,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=[],
    )


class Kafka:
    """A publish that refuses what the test says, and records what it was asked."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    async def publish(self, topic: str, value: bytes | None, key: Any, headers: Any) -> Any:
        self.sent.append((topic, len(value or b"")))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.refuse(topic, value or b"")
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        return future

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


def processor(model: LoadedModel, kafka: Kafka, **stream: Any) -> BatchProcessor:
    settings = load_settings(
        kafka={"max_request_size": 4_096},
        stream={"retry_initial_backoff_s": 0.001, "retry_max_backoff_s": 0.001, **stream},
    )
    pipeline = ScoringPipeline(model, MemoryFeatures({}), ThreadPoolExecutor(1))
    return BatchProcessor(pipeline, kafka.publish, settings, asyncio.Event())


async def test_a_refusal_retrying_cannot_fix_stops_the_batch_after_bounded_attempts(
    model: LoadedModel,
) -> None:
    kafka = Kafka(
        lambda topic, _: TopicAuthorizationFailedError() if topic == "predictions" else None
    )
    batch = processor(model, kafka, max_batch_attempts=3)
    await batch.process([record(0, event_bytes(0, "user-1"))], kafka.commit)
    await batch.drain()
    assert Counter(topic for topic, _ in kafka.sent) == {"predictions": 3}  # not forever
    assert kafka.commits == []  # never committed past it
    assert batch.halted is not None
    assert "retrying cannot fix" in batch.halted
    assert batch._completing is not None
    error = batch._completing.exception()
    assert getattr(error, "exit_code", None) == ExitCode.REPEATED_FAILURE


async def test_a_dead_letter_refused_as_too_large_is_cut_and_sent_again(
    model: LoadedModel,
) -> None:
    limits = iter([1_500])  # the broker refuses the first dead letter: its limit is lower

    def refuse(topic: str, value: bytes) -> Exception | None:
        if topic != "events.dlq" or len(value) <= next(limits, 10**9):
            return None
        error: Exception = MessageSizeTooLargeError()
        return error

    kafka = Kafka(refuse)
    batch = processor(model, kafka)
    await batch.process(
        [record(0, b"{" + b"x" * 10_000), record(1, event_bytes(1, "u"))], kafka.commit
    )
    await batch.drain()
    dead = [size for topic, size in kafka.sent if topic == "events.dlq"]
    assert len(dead) == 2
    assert dead[0] < 4_096  # cut to the producer's limit first
    assert dead[1] < dead[0] // 2 + 100  # then to half of it, after the refusal
    assert kafka.commits == [{TopicPartition("events", 0): 2}]
    assert batch.halted is None
