"""relay_confluent: the ceiling on librdkafka. ``confluent_kafka.Consumer`` (no auto commit, the
same group semantics as the aiokafka relay) ``consume()``s up to 500 records, a
``confluent_kafka.Producer`` with the product's librdkafka producer options (``acks=all``,
idempotent, the same codec and linger: :func:`streams.librdkafka_options.producer_config`)
re-publishes the same bytes, ``flush()`` waits for every delivery callback, then the consumer
commits the batch's offsets synchronously. No parsing, enrichment or model.

librdkafka's calls block, so the relay loop runs in a thread; the event loop only carries the
reporter (ticks and the loop-lag monitor).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bench.variants.reporter import Reporter, until_signal
from settings import Settings
from streams.librdkafka_options import client_config, producer_config


class ConfluentRelay:
    def __init__(self, settings: Settings, rep: Reporter) -> None:
        kafka = settings.kafka
        self.rep = rep
        self.output = kafka.output_topic
        self.max_batch = settings.stream.max_batch_size
        self.assigned: set[tuple[str, int]] = set()
        self.stopping = threading.Event()
        self.consumer = Consumer(
            client_config(kafka)
            | {
                "group.id": kafka.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.producer = Producer(producer_config(kafka))
        self.consumer.subscribe(
            [kafka.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}

    def run(self) -> None:
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        while not self.stopping.is_set():
            records = self.consumer.consume(num_messages=self.max_batch, timeout=0.1)
            if not records:
                continue
            ends: dict[tuple[str, int], int] = {}
            sent = 0
            for record in records:
                if (error := record.error()) is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                self.producer.produce(
                    self.output, record.value(), record.key(), on_delivery=delivered
                )
                sent += 1
                topic, partition, offset = record.topic(), record.partition(), record.offset()
                if topic is not None and partition is not None and offset is not None:
                    ends[(topic, partition)] = offset + 1
            self.producer.flush()  # every delivery callback has run
            if failed:
                raise KafkaException(failed[0])
            if ends:
                self.consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                    asynchronous=False,
                )
            self.rep.count += sent

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


async def run_relay_confluent(settings: Settings, rep: Reporter) -> None:
    relay = ConfluentRelay(settings, rep)
    rep.assigned = lambda: len(relay.assigned)
    task = asyncio.create_task(asyncio.to_thread(relay.run))
    stop = asyncio.create_task(until_signal())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        relay.stopping.set()
        stop.cancel()
        try:
            await task  # raises what the relay raised
        finally:
            relay.close()
