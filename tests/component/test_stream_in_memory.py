"""The stream adapter on FastStream's in-memory broker: routing, dead letters, retries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from faststream import TestApp
from faststream.kafka import KafkaBroker, KafkaMessage, TestKafkaBroker

from scoring import EntityCache, ScoringPipeline, load_model
from settings import Settings
from streams.app import build_app
from streams.testing import broker_outputs
from tests.support.helpers import MemoryFeatures
from tests.support.names import Names, settings_for

STORED = {"user-1": {"account_age_days": 12.0, "avg_amount_30d": 30.0}}


def good(i: int, entity: str = "user-1") -> bytes:
    return json.dumps(
        {"event_id": f"e-{i}", "entity_id": entity, "features": {"amount": 10.0 * i}}
    ).encode()


BAD = [
    b"not json",
    b"\xff\xfe\xfa",
    b'{"event_id": "x", "entity_id": {"$ne": null}}',
    b'{"event_id": "y", "entity_id": "u", "features": {"amount": Infinity}}',
    b"[]",
]


async def run_batch(
    names: Names, model_path: Path, source: MemoryFeatures, values: list[bytes]
) -> tuple[list[dict[str, Any]], list[tuple[bytes, dict[str, str]]], Any]:
    settings: Settings = settings_for(names, model_path, kafka={"create_topics": False})

    @asynccontextmanager
    async def factory(_: Settings) -> AsyncIterator[ScoringPipeline]:
        with ThreadPoolExecutor(1) as executor:
            yield ScoringPipeline(
                load_model(model_path), source, executor, cache=EntityCache(100, 60)
            )

    app, broker, runtime = build_app(
        settings, factory, broker=KafkaBroker(), outputs=broker_outputs
    )
    assert isinstance(broker, KafkaBroker)
    predictions: list[dict[str, Any]] = []
    dead: list[tuple[bytes, dict[str, str]]] = []

    @broker.subscriber(names.output_topic)
    async def on_prediction(msg: KafkaMessage) -> None:
        predictions.append(json.loads(msg.body))

    @broker.subscriber(names.dlq_topic)
    async def on_dead_letter(msg: KafkaMessage) -> None:
        dead.append((msg.body, dict(msg.headers)))

    async with TestKafkaBroker(broker) as test_broker, TestApp(app):
        await test_broker.publish_batch(*values, topic=names.input_topic)
    return predictions, dead, runtime.processor


async def test_good_records_are_scored_and_bad_ones_dead_lettered(
    names: Names, model_path: Path
) -> None:
    values = [good(1), BAD[0], good(2, "nobody"), *BAD[1:], good(3)]
    predictions, dead, processor = await run_batch(
        names, model_path, MemoryFeatures(STORED), values
    )
    assert sorted(p["event_id"] for p in predictions) == ["e-1", "e-2", "e-3"]
    by_id = {p["event_id"]: p for p in predictions}
    assert by_id["e-1"]["enrichment"] == "hit"
    assert by_id["e-2"]["enrichment"] == "miss"
    assert sorted(body for body, _ in dead) == sorted(BAD)
    kinds = {body: h["streamscore.error.kind"] for body, h in dead}
    assert kinds[b"not json"] == "invalid_json"
    assert kinds[b"\xff\xfe\xfa"] == "invalid_encoding"
    assert kinds[BAD[2]] == "invalid_event"
    assert kinds[b"[]"] == "invalid_event"
    for _, headers in dead:
        assert headers["streamscore.source.topic"] == names.input_topic
        assert headers["streamscore.error.message"]
    assert processor.stats.commits == 1


async def test_mongo_outage_is_retried_not_dead_lettered(names: Names, model_path: Path) -> None:
    source = MemoryFeatures(STORED, failures=3)
    predictions, dead, processor = await run_batch(names, model_path, source, [good(1), good(2)])
    assert [p["event_id"] for p in predictions] == ["e-1", "e-2"]
    assert dead == []
    assert processor.stats.retries == 3
    assert len(source.calls) == 4
    assert processor.stats.commits == 1
