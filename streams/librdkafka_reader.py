"""Reading whole topics through librdkafka (``audit`` with ``STREAMSCORE_KAFKA__CLIENT=confluent``).

A topic is read from the beginning until librdkafka reports the end of every partition
(``enable.partition.eof``: the end as of the fetch, past transaction markers too); nothing is
committed. A record librdkafka cannot read stops the read with the error, naming its place.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import TopicPartition as LibrdkafkaPartition

from settings import KafkaSettings
from streams.librdkafka_options import client_config
from streams.librdkafka_records import LibrdkafkaRecord
from streams.offsets import topic_partitions

Isolation = Literal["read_committed", "read_uncommitted"]

READ_TIMEOUT_S = 120.0
"""A read that makes no progress for this long fails (the broker is gone)."""


class UnreadableTopicError(RuntimeError):
    """librdkafka could not read a record of the topic."""


async def read_topic(
    kafka: KafkaSettings, topic: str, isolation: Isolation = "read_uncommitted"
) -> list[LibrdkafkaRecord]:
    """Every record of ``topic`` from its beginning to its end at the time of the read."""
    partitions = await topic_partitions(kafka, [topic])
    if not partitions:
        return []
    return await asyncio.to_thread(
        _read, kafka, [(tp.topic, tp.partition) for tp in partitions], isolation
    )


def _read(
    kafka: KafkaSettings, partitions: list[tuple[str, int]], isolation: Isolation
) -> list[LibrdkafkaRecord]:
    consumer = Consumer(
        client_config(kafka)
        | {
            "group.id": f"streamscore-reader-{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "check.crcs": True,
        }
    )
    try:
        consumer.assign([LibrdkafkaPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        remaining = set(partitions)
        records: list[LibrdkafkaRecord] = []
        last_progress = time.monotonic()
        while remaining:
            messages = consumer.consume(10_000, 1.0)
            if messages:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > READ_TIMEOUT_S:
                raise TimeoutError(f"no progress reading {sorted(remaining)} for {READ_TIMEOUT_S}s")
            for message in messages:
                error = message.error()
                if error is None:
                    records.append(LibrdkafkaRecord(message))
                elif error.code() == LibrdkafkaError._PARTITION_EOF:
                    remaining.discard((message.topic() or "", message.partition() or 0))
                elif message.offset() is not None and (message.offset() or 0) >= 0:
                    raise UnreadableTopicError(
                        f"cannot read {message.topic()}[{message.partition()}] at offset "
                        f"{message.offset()}: {error.str()}"
                    )
        return records
    finally:
        consumer.close()
