"""relay: the ceiling. Plain aiokafka: consume a batch (≤ 500 records), re-publish the same
bytes with the product's producer options, await the acks, commit. No parsing, enrichment or
model."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.variants.reporter import Reporter, until_signal
from settings import Settings
from streams.kafka_options import producer_options


async def run_relay(settings: Settings, rep: Reporter) -> None:
    kafka = settings.kafka
    max_batch = settings.stream.max_batch_size
    consumer = AIOKafkaConsumer(
        kafka.input_topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        client_id=kafka.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_batch,
        isolation_level=kafka.input_isolation,  # as the scorer reads its input
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=kafka.client_id,
        **producer_options(kafka),
    )
    await producer.start()
    await consumer.start()
    rep.assigned = lambda: len(consumer.assignment())

    async def relay() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=max_batch)
            if not batches:
                continue
            pending = [
                await producer.send(kafka.output_topic, r.value, key=r.key)
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*pending)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            rep.count += len(pending)

    task = asyncio.create_task(relay())
    try:
        await until_signal()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
