"""The HTTP sidecar on the real servers: parity with the stream, batching under load, and
readiness through a MongoDB outage (on a private FerretDB, never the shared one)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from api.app import create_app
from scoring import LoadedModel, ScoringPipeline
from settings import Settings
from streams.app import build_app
from streams.topics import ensure_topics
from tests.conftest import Names, settings_for
from tests.kafka_io import produce, read_until
from tests.private_servers import PrivateMongo

pytestmark = pytest.mark.integration

DOCUMENTS: list[dict[str, Any]] = [
    {
        "_id": "user-1",
        "features": {"account_age_days": 12, "avg_amount_30d": 30.5, "country_risk": 0.9},
        "updated_at": "2026-11-20T08:00:00Z",
    },
    {
        "_id": "user-2",
        "features": {"account_age_days": 2_400, "txn_count_30d": 41, "avg_amount_30d": 18.0},
        "updated_at": "2026-11-20T08:00:00Z",
    },
    {
        "_id": "user-3",
        "features": {"country_risk": 0.05, "is_new_device": 1, "not_a_model_feature": 3},
        "updated_at": "2026-11-20T08:00:00Z",
    },
]
STORED: dict[str, dict[str, float]] = {d["_id"]: d["features"] for d in DOCUMENTS}


def offline_score(model: LoadedModel, event: Mapping[str, Any]) -> float:
    """``Booster.predict`` of the contract's vector: event value, else stored, else NaN."""
    stored = STORED.get(event["entity_id"], {})
    row = []
    for name in model.feature_names:
        value = event.get("features", {}).get(name)
        if value is None:
            value = stored.get(name)
        row.append(math.nan if value is None else float(value))
    return float(model.booster.predict(np.array([row], dtype=np.float64))[0])


def expected_enrichment(event: Mapping[str, Any]) -> str:
    return "hit" if event["entity_id"] in STORED else "miss"


@asynccontextmanager
async def sidecar(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on the real servers (default pipeline factory), lifespan running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sidecar", timeout=30
        ) as client:
            yield app, client


def pipeline_of(app: FastAPI) -> ScoringPipeline:
    pipeline: ScoringPipeline = app.state.runtime["pipeline"]
    return pipeline


def parity_events() -> list[dict[str, Any]]:
    return [
        {"event_id": "p-0", "entity_id": "user-1", "features": {"amount": 129.9, "hour": 23}},
        {"event_id": "p-1", "entity_id": "user-2", "features": {"amount": 5.0}},
        # the event's own value wins over the stored one
        {"event_id": "p-2", "entity_id": "user-1", "features": {"account_age_days": 3000}},
        # null falls back to the stored value; unknown names are ignored
        {
            "event_id": "p-3",
            "entity_id": "user-3",
            "features": {"country_risk": None, "hour": 4, "unused": 1},
        },
        {"event_id": "p-4", "entity_id": "ghost-1", "features": {"amount": 900.0, "hour": 3}},
        {"event_id": "p-5", "entity_id": "ghost-2", "features": {}},
        {"event_id": "p-6", "entity_id": "user-2", "event_time": "2026-11-25T10:00:00Z"},
    ]


async def test_http_and_stream_give_the_offline_score(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
) -> None:
    await mongo_db["entity_features"].insert_many([dict(d) for d in DOCUMENTS])
    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    events = parity_events()
    offline = {e["event_id"]: offline_score(model, e) for e in events}

    # Door 1: HTTP, as one list and as single events.
    async with sidecar(settings) as (_, client):
        as_list = await client.post("/predict", json=events)
        assert as_list.status_code == 200, as_list.text
        singles = [await client.post("/predict", json=e) for e in events]
    http = {p["event_id"]: p for p in as_list.json()}
    assert [p["event_id"] for p in as_list.json()] == [e["event_id"] for e in events]
    for single in singles:
        assert single.status_code == 200, single.text
        assert single.json()["score"] == http[single.json()["event_id"]]["score"]

    # Door 2: the Kafka stream.
    await ensure_topics(settings.kafka)
    await produce(
        kafka_bootstrap,
        names.input_topic,
        [json.dumps(e).encode() for e in events],
        [e["entity_id"].encode() for e in events],
    )
    stream_app, _, runtime = build_app(settings)
    await stream_app.start()
    try:
        records = await read_until(
            kafka_bootstrap, [names.output_topic], len(events), timeout_s=60, settle_s=0.5
        )
    finally:
        await stream_app.stop()
    stream = {p["event_id"]: p for p in (json.loads(r.value) for r in records)}
    assert len(records) == len(events)
    assert runtime.processor is not None

    assert sorted(stream) == sorted(http) == sorted(offline)
    for event in events:
        event_id = event["event_id"]
        assert http[event_id]["score"] == stream[event_id]["score"] == offline[event_id], event_id
        assert (
            http[event_id]["enrichment"]
            == stream[event_id]["enrichment"]
            == expected_enrichment(event)
        ), event_id
        assert http[event_id]["entity_id"] == stream[event_id]["entity_id"] == event["entity_id"]
        assert http[event_id]["model"] == stream[event_id]["model"]
    assert http["p-6"]["event_time"] == stream["p-6"]["event_time"] == "2026-11-25T10:00:00.000Z"


async def test_concurrent_requests_share_pipeline_calls(
    mongo_url: str, mongo_db: Any, names: Names, model_path: Path, model: LoadedModel
) -> None:
    await mongo_db["entity_features"].insert_many([dict(d) for d in DOCUMENTS])
    settings = settings_for(names, model_path, mongo_url=mongo_url)
    entities = ["user-1", "user-2", "user-3", "ghost-1"]
    events = [
        {
            "event_id": f"c-{i:03d}",
            "entity_id": entities[i % len(entities)],
            "features": {"amount": float(i), "hour": i % 24},
        }
        for i in range(200)
    ]

    async with sidecar(settings) as (app, client):
        responses = await asyncio.gather(*(client.post("/predict", json=e) for e in events))
        stats = pipeline_of(app).stats

    assert [r.status_code for r in responses] == [200] * len(events)
    for event, response in zip(events, responses, strict=True):
        body = response.json()
        assert body["event_id"] == event["event_id"]
        assert body["entity_id"] == event["entity_id"]
        assert body["score"] == offline_score(model, event), event["event_id"]
        assert body["enrichment"] == expected_enrichment(event)
    assert stats.model_calls <= 40, stats.batch_sizes
    assert max(stats.batch_sizes) <= settings.api.batch_max_size
    assert sum(stats.batch_sizes) == stats.events == len(events)
    assert len(stats.batch_sizes) == stats.model_calls


async def wait_for_status(
    client: httpx.AsyncClient, path: str, status: int, timeout_s: float
) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.25)


async def seed(url: str, database: str, documents: Sequence[dict[str, Any]]) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=5_000)
    try:
        await client[database]["entity_features"].insert_many([dict(d) for d in documents])
    finally:
        await client.close()


async def test_readiness_follows_a_mongodb_outage(
    private_mongo: PrivateMongo, names: Names, model_path: Path
) -> None:
    await seed(private_mongo.url, names.database, DOCUMENTS)
    settings = settings_for(
        names,
        model_path,
        mongo_url=private_mongo.url,
        mongo={
            "server_selection_timeout_ms": 500,
            "operation_timeout_ms": 500,
            "connect_timeout_ms": 500,
        },
        api={"retry_after_s": 3},
    )
    async with sidecar(settings) as (app, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        before = await client.post("/predict", json={"event_id": "a", "entity_id": "user-1"})
        assert before.status_code == 200
        assert before.json()["enrichment"] == "hit"

        await private_mongo.astop()

        down = await client.get("/readyz")
        assert down.status_code == 503, down.text
        assert "MongoDB" in down.json()["detail"]
        assert down.headers["Retry-After"] == "3"
        # An entity the cache does not hold needs MongoDB: 503, not 500, not a guess.
        started = time.monotonic()
        outage = await client.post("/predict", json={"event_id": "b", "entity_id": "user-2"})
        assert outage.status_code == 503, outage.text
        assert outage.headers["Retry-After"] == "3"
        assert "unavailable" in outage.json()["detail"]
        assert time.monotonic() - started < 5  # bounded by the configured timeouts
        assert pipeline_of(app).stats.enrichment_failures >= 1

        await private_mongo.astart()

        back = await wait_for_status(client, "/readyz", 200, timeout_s=15)
        assert back.status_code == 200, back.text
        after = await client.post("/predict", json={"event_id": "c", "entity_id": "user-2"})
        assert after.status_code == 200, after.text
        assert after.json()["enrichment"] == "hit"
