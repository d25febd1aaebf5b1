"""Outputs handed over as record batches, on the real broker: every record arrives once, in
the partition Kafka's default partitioner gives its key, in order, with the dead letters and a
record too large for a batch handed over one by one beside them. The partition of a key is the
same from both clients (librdkafka's own default would hash keys differently)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from settings import KafkaSettings
from streams.delivery_types import Output
from streams.librdkafka_outputs import librdkafka_outputs
from streams.outputs import aiokafka_outputs
from streams.topics import ensure_topics
from tests.support.kafka_io import read_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.mark.parametrize(
    "open_outputs", [aiokafka_outputs, librdkafka_outputs], ids=["aiokafka", "librdkafka"]
)
async def test_batches_keep_partition_order_and_lose_nothing(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    open_outputs: Callable[[KafkaSettings], AbstractAsyncContextManager[Any]],
) -> None:
    settings = settings_for(
        names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url, kafka={}
    )
    kafka = settings.kafka
    await ensure_topics(kafka)
    outputs: list[Output] = []
    for i in range(3_000):  # several record batches per partition (16 KiB each)
        key = f"user-{i % 97}".encode()
        outputs.append((kafka.output_topic, b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200), key, None))
        if i % 500 == 250:
            headers = [("reason", b"\x00\xff binary"), ("none", None)]
            outputs.append((kafka.dlq_topic, f"dead {i}".encode(), key, headers))
        if i == 1_234:
            outputs.append((kafka.output_topic, b"L" * 20_000, key, None))  # over half a batch
        if i == 2_000:
            outputs.append((kafka.output_topic, b'{"no key":1}', None, None))
    before_ms = time.time() * 1000
    async with open_outputs(kafka) as sink:
        handed = await sink.send_many(outputs, range(len(outputs)))
        await asyncio.gather(*(future for future, _ in handed))
    after_ms = time.time() * 1000
    covered = sorted(i for _, indexes in handed for i in indexes)
    assert covered == list(range(len(outputs)))  # each output acknowledged by one future
    assert len(handed) < len(outputs) // 20  # batched, not one future per record

    records = await read_until(
        kafka_bootstrap, [kafka.output_topic, kafka.dlq_topic], len(outputs), timeout_s=30
    )
    assert sorted((r.topic, r.value, r.key) for r in records) == sorted(
        (topic, value, key) for topic, value, key, _ in outputs
    )
    # Each record carries the time it was handed over, as with ``send``.
    assert all(before_ms - 1_000 <= r.timestamp <= after_ms + 1_000 for r in records)
    partition_of = DefaultPartitioner()
    by_partition: dict[tuple[str, int], list[bytes | None]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        if record.key is not None:
            expected = partition_of(record.key, list(range(PARTITIONS)), [])
            assert record.partition == expected
        by_partition[(record.topic, record.partition)].append(record.value)
    for (topic, partition), values in by_partition.items():
        sent = [
            value
            for t, value, key, _ in outputs
            if t == topic
            and key is not None
            and partition_of(key, list(range(PARTITIONS)), []) == partition
        ]
        assert [v for v in values if v != b'{"no key":1}'] == sent
    dead = [r for r in records if r.topic == kafka.dlq_topic]
    assert all(dict(r.headers)["reason"] == b"\x00\xff binary" for r in dead)
    assert all(dict(r.headers)["none"] is None for r in dead)


async def test_records_of_a_topic_without_metadata_fail_together(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path
) -> None:
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"request_timeout_ms": 3_000},
    )
    kafka = settings.kafka
    await ensure_topics(kafka)
    missing = f"{kafka.output_topic}-missing"
    outputs: list[Output] = [(missing, b"v%d" % i, b"k%d" % i, None) for i in range(10)]
    outputs.append((kafka.output_topic, b"fine", b"k", None))
    async with aiokafka_outputs(kafka) as sink:
        handed = await sink.send_many(outputs, range(len(outputs)))
        results = await asyncio.gather(*(f for f, _ in handed), return_exceptions=True)
    failed = sorted(
        i
        for (_, idx), r in zip(handed, results, strict=True)
        if isinstance(r, BaseException)
        for i in idx
    )
    assert failed == list(range(10))
    assert all(isinstance(r, KafkaError) for r in results if isinstance(r, BaseException))
