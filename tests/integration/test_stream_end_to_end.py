"""The scorer on the real servers: 5,000 events, ~2% bad, nothing lost, nothing extra,
every score equal to the offline ``Booster.predict`` of the same vector."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scoring import LoadedModel
from streams.app import build_app
from streams.topics import ensure_topics
from tests.support.helpers import offline_scores, random_entity_documents
from tests.support.kafka_io import committed_lag, produce, read_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

BAD: list[tuple[bytes | None, str]] = [
    (b"this is not json", "invalid_json"),
    (b"\xc3\x28\xa0\xa1 not utf-8", "invalid_encoding"),
    (b'{"event_id": "bad-1", "features": {}}', "invalid_event"),  # missing entity_id
    (b'{"event_id": "bad-2", "entity_id": "u", "features": {"amount": "12"}}', "invalid_event"),
    (b'{"event_id": "bad-3", "entity_id": "u", "features": {"amount": NaN}}', "invalid_event"),
    (b'{"event_id": "bad-4", "entity_id": {"$ne": null}}', "invalid_event"),
    (b'{"event_id": "bad-5", "entity_id": "' + b"x" * 129 + b'"}', "invalid_event"),
    (b"", "empty_value"),
    (b"null", "invalid_event"),
    (b"[1, 2]", "invalid_event"),
]


def make_events(
    count: int, seed: int
) -> tuple[list[tuple[bytes | None, bytes | None]], list[dict[str, Any]], list[str]]:
    rng = random.Random(seed)
    records: list[tuple[bytes | None, bytes | None]] = []
    valid: list[dict[str, Any]] = []
    expected_kinds: list[str] = []
    for i in range(count):
        if rng.random() < 0.02:
            value, kind = BAD[len(expected_kinds) % len(BAD)]
            records.append((None, value))
            expected_kinds.append(kind)
            continue
        known = rng.random() < 0.8
        entity = f"user-{rng.randrange(200)}" if known else f"ghost-{rng.randrange(50)}"
        event: dict[str, Any] = {
            "event_id": f"e-{i:05d}",
            "entity_id": entity,
            "features": {
                "amount": round(rng.lognormvariate(3.5, 1.0), 2),
                "hour": rng.randrange(24),
                "is_new_device": rng.choice([0, 1, None]),
                "account_age_days": 5 if rng.random() < 0.1 else None,  # overrides stored
                "unused_feature": 1.5,
            },
            "producer_version": "7.1",  # an extra top-level field: ignored
        }
        if rng.random() < 0.5:
            event["event_time"] = "2026-11-25T10:00:00Z"
        records.append((entity.encode(), json.dumps(event).encode()))
        valid.append(event)
    return records, valid, expected_kinds


async def test_stream_scores_every_valid_event_once_and_dead_letters_the_rest(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
    kafka_client: str,
) -> None:
    documents = random_entity_documents(200, seed=3)
    await mongo_db["entity_features"].insert_many(documents)
    stored = {d["_id"]: d["features"] for d in documents}

    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
        stream={"max_batch_size": 256},
    )
    await ensure_topics(settings.kafka)
    records, valid, expected_kinds = make_events(5_000, seed=5)
    assert 60 <= len(expected_kinds) <= 140
    await produce(
        kafka_bootstrap, names.input_topic, [v for _, v in records], [k for k, _ in records]
    )

    app, _, runtime = build_app(settings)
    await app.start()
    try:
        outputs = await read_until(
            kafka_bootstrap, [names.output_topic, names.dlq_topic], len(records), timeout_s=180
        )
    finally:
        await app.stop()

    predictions = [json.loads(r.value) for r in outputs if r.topic == names.output_topic]
    dead = [r for r in outputs if r.topic == names.dlq_topic]

    # Counts: one prediction per valid event, nothing else.
    counts = Counter(p["event_id"] for p in predictions)
    assert sorted(counts) == sorted(e["event_id"] for e in valid)
    assert max(counts.values()) == 1
    # Dead letters: the original bytes, the right reasons, the source position.
    assert sorted(r.value or b"" for r in dead) == sorted(v or b"" for _, v in records if _ is None)
    kinds = Counter(dict(r.headers)["streamscore.error.kind"].decode() for r in dead)
    assert kinds == Counter(expected_kinds)
    for r in dead:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["streamscore.source.topic"] == names.input_topic
        assert int(headers["streamscore.source.offset"]) >= 0
        assert headers["streamscore.error.message"]

    # Values: exactly the offline score of the vector built from the event and its document.
    expected = offline_scores(model, valid, stored)
    by_id = {e["event_id"]: e for e in valid}
    for p in predictions:
        assert p["score"] == expected[p["event_id"]], p
        event = by_id[p["event_id"]]
        assert p["entity_id"] == event["entity_id"]
        assert p["enrichment"] == ("hit" if event["entity_id"] in stored else "miss")
        assert p["model"] == {"name": model.name, "version": model.version}
        if "event_time" in event:
            assert p["event_time"] == "2026-11-25T10:00:00Z"
    keys = {r.key.decode() for r in outputs if r.topic == names.output_topic}
    assert keys == {e["entity_id"] for e in valid}

    # Everything consumed was committed, after the outputs.
    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}
    assert runtime.processor is not None
    assert runtime.processor.stats.consumed == len(records)
