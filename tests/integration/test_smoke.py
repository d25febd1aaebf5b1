"""The real servers answer: a Kafka round trip and a MongoDB `$in` lookup."""

from __future__ import annotations

from typing import Any

import pytest

from settings import KafkaSettings
from streams.topics import ensure_topics, partitions_of
from tests.support.kafka_io import produce, read_until
from tests.support.names import Names

pytestmark = pytest.mark.integration


async def test_kafka_round_trip(kafka_bootstrap: str, names: Names) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=3)
    created = await ensure_topics(kafka, [names.input_topic])
    assert created == [names.input_topic]
    assert await ensure_topics(kafka, [names.input_topic]) == []
    assert (await partitions_of(kafka, [names.input_topic]))[names.input_topic] == [0, 1, 2]

    values = [f"message-{i}".encode() for i in range(300)]
    await produce(kafka_bootstrap, names.input_topic, values, [str(i).encode() for i in range(300)])
    records = await read_until(kafka_bootstrap, [names.input_topic], 300, timeout_s=30)
    assert sorted(r.value for r in records) == sorted(values)
    assert {r.partition for r in records} == {0, 1, 2}


async def test_mongo_insert_and_in_lookup(mongo_db: Any) -> None:
    collection = mongo_db["entity_features"]
    docs = [{"_id": f"user-{i}", "features": {"age": i}} for i in range(500)]
    result = await collection.insert_many(docs)
    assert len(result.inserted_ids) == 500
    wanted = [f"user-{i}" for i in range(0, 500, 7)] + ["user-missing"]
    found = await collection.find({"_id": {"$in": wanted}}, {"features.age": 1}).to_list()
    assert sorted(d["_id"] for d in found) == sorted(wanted[:-1])
    assert all(d["features"]["age"] == int(d["_id"].split("-")[1]) for d in found)
    assert (await mongo_db.command("ping"))["ok"] == 1
