"""Plain aiokafka helpers the integration tests use to drive and observe topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from settings import KafkaSettings, Settings
from streams.offsets import end_offsets, lag, topic_partitions


async def produce(
    bootstrap: str, topic: str, values: Sequence[bytes | None], keys: Sequence[bytes | None]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key)
            for value, key in zip(values, keys, strict=True)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str, topics: Sequence[str], expected: int, timeout_s: float, settle_s: float = 2.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topics`` from the beginning until ``expected`` records arrived (or the timeout),
    then keep reading for ``settle_s`` so unexpected extra records are seen too."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(records) < expected:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def committed_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition: end offset minus the group's committed offset (0 = all committed)."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), [topic])
    assert partitions, f"topic {topic} has no partitions"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await end_offsets(consumer, partitions)
        return lag(ends, {tp: await consumer.committed(tp) for tp in partitions})
    finally:
        await consumer.stop()


async def end_total(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (sum of its partitions' end offsets)."""
    partitions = await topic_partitions(KafkaSettings(bootstrap_servers=bootstrap), [topic])
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum((await end_offsets(consumer, partitions)).values())
    finally:
        await consumer.stop()


async def score_until(settings: Settings, expected: int, timeout_s: float) -> tuple[list[Any], Any]:
    """Run the scorer in this process until ``expected`` outputs (predictions + dead letters)
    arrived or the timeout; returns the outputs and the scorer's runtime."""
    from streams.app import build_app

    app, _, runtime = build_app(settings)
    await app.start()
    try:
        kafka = settings.kafka
        outputs = await read_until(
            kafka.bootstrap_servers, [kafka.output_topic, kafka.dlq_topic], expected, timeout_s
        )
    finally:
        await app.stop()
    return outputs, runtime
