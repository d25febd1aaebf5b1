"""naive and naive + executor: the tutorial pattern.

A FastStream ``KafkaBroker`` subscriber (not batched), one event per handler call, pydantic
parsing, an uncached ``await collection.find_one({"_id": ...})``, a one-row predict (inline on
the event loop, or in the default thread executor), ``await broker.publish`` with the broker's
default producer options, then FastStream commits the offset (``AckPolicy.ACK``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream import AckPolicy
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from bench.variants.one_row import OneRowModel, stored_features
from bench.variants.reporter import Reporter, until_signal
from schemas import InputEvent
from settings import Settings


def subscriber_assignment(broker: KafkaBroker | ConfluentBroker) -> int:
    """Partitions held by the broker's one subscriber (0 before it has a consumer)."""
    consumer = getattr(broker.subscribers[0], "consumer", None)
    return len(consumer.assignment()) if consumer is not None else 0


async def run_naive(settings: Settings, rep: Reporter, *, executor: bool) -> None:
    kafka, mongo = settings.kafka, settings.mongo
    model = OneRowModel(settings.model.path)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url.get_secret_value())
    collection = client[mongo.database][mongo.collection]
    broker = KafkaBroker(kafka.bootstrap_servers, log_level=logging.DEBUG)

    @broker.subscriber(
        kafka.input_topic,
        group_id=kafka.group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )
    async def handle(event: InputEvent) -> None:
        doc = await collection.find_one({"_id": event.entity_id})
        row = model.row(event, stored_features(doc))
        if executor:
            score = await asyncio.get_running_loop().run_in_executor(None, model.predict, row)
        else:
            score = model.predict(row)
        prediction = model.prediction(event, score, doc is not None)
        await broker.publish(prediction, kafka.output_topic, key=event.entity_id.encode())
        rep.count += 1

    await broker.start()
    rep.assigned = lambda: subscriber_assignment(broker)
    try:
        await until_signal()
    finally:
        await broker.stop()
        await client.close()
