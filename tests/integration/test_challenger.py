"""The challenger and reason codes on the real servers: both predictions of every event,
each equal to its own model's offline predict; a broken challenger leaves the main stream
alone; promotion under load; reason codes equal offline ``pred_contrib`` and add up."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring import LoadedModel, load_model
from scoring.challenger import promote_files
from settings import Settings
from streams.app import build_app
from streams.runtime import StreamRuntime
from streams.topics import ensure_topics, scorer_topics
from tests.support.challenger import (
    CHALLENGER_NAME,
    copy_model,
    offline_reasons,
    train_challenger,
    vectors,
)
from tests.support.helpers import (
    eventually,
    offline_scores,
    random_entity_documents,
    stored_features,
)
from tests.support.kafka_io import produce, read_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

ENTITIES = 120


@pytest.fixture(scope="module")
def challenger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_challenger(tmp_path_factory.mktemp("challenger") / "challenger.txt")


async def seed(mongo_db: Any) -> dict[str, dict[str, float]]:
    documents = random_entity_documents(ENTITIES, seed=7)
    await mongo_db["entity_features"].insert_many(documents)
    return stored_features(documents)


def make_events(count: int, prefix: str, seed_: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed_)
    events = []
    for i in range(count):
        known = rng.random() < 0.85
        entity = f"user-{rng.randrange(ENTITIES)}" if known else f"ghost-{rng.randrange(20)}"
        events.append(
            {
                "event_id": f"{prefix}-{i:05d}",
                "entity_id": entity,
                "event_time": "2026-11-25T10:00:00Z",
                "features": {
                    "amount": round(rng.lognormvariate(3.5, 1.0), 2),
                    "hour": rng.randrange(24),
                    "is_new_device": rng.choice([0, 1, None]),
                },
            }
        )
    return events


async def send(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    await produce(
        bootstrap,
        topic,
        [json.dumps(e).encode() for e in events],
        [e["entity_id"].encode() for e in events],
    )


def challenger_settings(
    names: Names, model_path: Path, bootstrap: str, mongo_url: str, **sections: Any
) -> Settings:
    sections.setdefault("challenger", {}).setdefault(
        "topic", f"predictions-challenger-{names.suffix}"
    )
    sections.setdefault("stream", {}).setdefault("max_batch_size", 128)
    return settings_for(
        names,
        model_path,
        bootstrap=bootstrap,
        mongo_url=mongo_url,
        **sections,
    )


class Samples:
    """The scorer's metric samples, read before it stops (its scoring metrics leave the
    registry when the scoring service closes)."""

    def __init__(self, runtime: StreamRuntime) -> None:
        self._values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in runtime.registry.collect()
            for sample in family.samples
        }

    def get(self, name: str, **labels: str) -> float | None:
        return self._values.get((name, frozenset(labels.items())))


async def run_until(
    settings: Settings, topics: list[str], expected: int, timeout_s: float = 120
) -> tuple[list[Any], Samples]:
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        records = await read_until(
            settings.kafka.bootstrap_servers, topics, expected, timeout_s=timeout_s
        )
        samples = Samples(runtime)
    finally:
        await app.stop()
    return records, samples


def by_topic(records: list[Any], topic: str) -> dict[str, dict[str, Any]]:
    values = [json.loads(r.value) for r in records if r.topic == topic]
    counts = Counter(v["event_id"] for v in values)
    assert max(counts.values(), default=1) == 1, counts.most_common(3)
    return {v["event_id"]: v for v in values}


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_every_event_has_both_predictions_each_equal_to_its_own_model_offline(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
    challenger_path: Path,
    delivery: str,
) -> None:
    stored = await seed(mongo_db)
    settings = challenger_settings(
        names,
        model_path,
        kafka_bootstrap,
        mongo_url,
        challenger={"path": challenger_path, "threshold": 0.1},
        model={"reasons": 3},
        stream={"max_batch_size": 128, "delivery": delivery},
    )
    await ensure_topics(settings.kafka, scorer_topics(settings))
    events = make_events(800, "e")
    await send(kafka_bootstrap, names.input_topic, events)
    main_topic, shadow_topic = names.output_topic, settings.challenger.topic

    records, samples = await run_until(settings, [main_topic, shadow_topic], 2 * len(events))

    main, shadow = by_topic(records, main_topic), by_topic(records, shadow_topic)
    ids = sorted(e["event_id"] for e in events)
    assert sorted(main) == ids
    assert sorted(shadow) == ids
    challenger = load_model(challenger_path)
    expected_main = offline_scores(model, events, stored)
    expected_shadow = offline_scores(challenger, events, stored)
    assert expected_main != expected_shadow
    reasons = offline_reasons(model, vectors(model, events, stored), 3)
    for event, want in zip(events, reasons, strict=True):
        p, c = main[event["event_id"]], shadow[event["event_id"]]
        assert p["score"] == expected_main[event["event_id"]]
        assert c["score"] == expected_shadow[event["event_id"]]
        assert p["model"] == {"name": model.name, "version": model.version}
        assert c["model"] == {"name": CHALLENGER_NAME, "version": "c1"}
        assert c["enrichment"] == p["enrichment"]
        assert p["enrichment"] == ("hit" if event["entity_id"] in stored else "miss")
        assert c["event_time"] == p["event_time"] == "2026-11-25T10:00:00Z"
        assert c["entity_id"] == p["entity_id"] == event["entity_id"]
        assert p["reasons"] == want
        assert "reasons" not in c
    shadow_keys = {r.key.decode() for r in records if r.topic == shadow_topic}
    assert shadow_keys == {e["entity_id"] for e in events}
    # The comparison metrics saw every event once.
    assert samples.get("streamscore_challenger_events_total", model="challenger") == len(events)
    decisions = sum(
        samples.get("streamscore_challenger_decisions_total", outcome=o) or 0
        for o in ("both_above", "both_below", "main_only", "challenger_only")
    )
    assert decisions == len(events)
    differences = [abs(main[i]["score"] - shadow[i]["score"]) for i in ids]
    assert samples.get("streamscore_challenger_difference_sum") == pytest.approx(sum(differences))


async def test_reason_codes_follow_the_minimum_score_and_add_up(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
) -> None:
    stored = await seed(mongo_db)
    events = make_events(400, "r", seed_=9)
    matrix = vectors(model, events, stored)
    scores = np.asarray(model.booster.predict(matrix))
    cut = float(np.quantile(scores, 0.9))
    width = len(model.feature_names)
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        model={"reasons": width, "reasons_min_score": cut},
    )
    await ensure_topics(settings.kafka)
    await send(kafka_bootstrap, names.input_topic, events)

    records, _ = await run_until(settings, [names.output_topic], len(events))

    predictions = by_topic(records, names.output_topic)
    assert len(predictions) == len(events)
    raw = np.asarray(model.booster.predict(matrix, raw_score=True))
    expected_value = np.asarray(model.booster.predict(matrix, pred_contrib=True))[:, -1]
    offline = offline_reasons(model, matrix, width)
    explained = 0
    for i, event in enumerate(events):
        p = predictions[event["event_id"]]
        if p["score"] >= cut:
            explained += 1
            assert p["reasons"] == offline[i]
            total = sum(r["contribution"] for r in p["reasons"]) + expected_value[i]
            assert total == pytest.approx(raw[i], abs=1e-9)
        else:
            assert p["reasons"] == []
    assert explained == int(np.count_nonzero(scores >= cut))
    assert 0 < explained < len(events)


async def test_a_broken_challenger_leaves_the_main_stream_untouched(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
    tmp_path: Path,
) -> None:
    stored = await seed(mongo_db)
    broken = tmp_path / "challenger.txt"
    broken.write_text("tree\nnot really a model\n")
    broken.with_suffix(".json").write_text('{"name": "broken", "version": "0"}')
    settings = challenger_settings(
        names, model_path, kafka_bootstrap, mongo_url, challenger={"path": broken}
    )
    await ensure_topics(settings.kafka, scorer_topics(settings))
    events = make_events(300, "b", seed_=5)
    await send(kafka_bootstrap, names.input_topic, events)

    records, samples = await run_until(
        settings, [names.output_topic, settings.challenger.topic], len(events)
    )

    main = by_topic(records, names.output_topic)
    assert [r for r in records if r.topic == settings.challenger.topic] == []
    expected = offline_scores(model, events, stored)
    assert {i: p["score"] for i, p in main.items()} == expected
    assert all(p["model"] == {"name": model.name, "version": model.version} for p in main.values())
    assert samples.get("streamscore_challenger_failures_total", stage="load") == 1


async def test_promotion_under_load_leaves_no_event_unscored(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    challenger_path: Path,
    tmp_path: Path,
) -> None:
    stored = await seed(mongo_db)
    main_path = copy_model(model_path, tmp_path / "models" / "model.txt")
    shadow_path = copy_model(challenger_path, tmp_path / "shadow" / "challenger.txt")
    models = {m.name: m for m in (load_model(main_path), load_model(shadow_path))}
    settings = challenger_settings(
        names,
        main_path,
        kafka_bootstrap,
        mongo_url,
        challenger={"path": shadow_path},
        model={"reload_interval_s": 0.1},
        stream={"max_batch_size": 64},
    )
    await ensure_topics(settings.kafka, scorer_topics(settings))
    events = make_events(3_000, "p", seed_=11)
    main_topic, shadow_topic = names.output_topic, settings.challenger.topic

    app, _, runtime = build_app(settings)
    await app.start()
    try:
        chunks = [events[i : i + 100] for i in range(0, len(events) - 100, 100)]
        for number, chunk in enumerate(chunks):
            await send(kafka_bootstrap, names.input_topic, chunk)
            if number == len(chunks) // 3:
                promotion = await asyncio.to_thread(promote_files, main_path, shadow_path)
                assert promotion.main.name == CHALLENGER_NAME

        async def swapped() -> bool:
            started = runtime.started
            return started is not None and started.scoring.pipeline.model.name == CHALLENGER_NAME

        assert await eventually(swapped, within_s=60)
        await send(kafka_bootstrap, names.input_topic, events[-100:])  # after the swap
        records = await read_until(
            kafka_bootstrap, [main_topic, shadow_topic], 2 * len(events), timeout_s=120
        )
        samples = Samples(runtime)
    finally:
        await app.stop()

    main: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.topic == main_topic:
            main.setdefault(json.loads(r.value)["event_id"], []).append(json.loads(r.value))
    assert sorted(main) == sorted(e["event_id"] for e in events)  # none scored by neither
    by_id = {e["event_id"]: e for e in events}
    for topic in (main_topic, shadow_topic):
        for r in (r for r in records if r.topic == topic):
            p = json.loads(r.value)
            scorer = models[p["model"]["name"]]  # every prediction names the model that scored it
            assert p["model"]["version"] == scorer.version
            assert (
                p["score"] == offline_scores(scorer, [by_id[p["event_id"]]], stored)[p["event_id"]]
            )
    main_names = Counter(p[0]["model"]["name"] for p in main.values())
    assert set(main_names) == {"fraud", CHALLENGER_NAME}, main_names
    for event in events[-100:]:
        assert [p["model"]["name"] for p in main[event["event_id"]]] == [CHALLENGER_NAME]
    assert samples.get("streamscore_model_reloads_total", result="loaded") == 1
    assert samples.get("streamscore_challenger_reloads_total", result="loaded") == 1
