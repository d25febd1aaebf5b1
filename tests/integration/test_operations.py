"""Operating the scorer: hot model swap under load, metrics, multi-process scale-out."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from scoring import load_model
from scoring.model import metadata_path
from streams.app import build_app
from streams.audit import audit
from streams.exit_codes import ExitCode
from streams.topics import ensure_topics, group_state
from tests.support.helpers import (
    entity_documents,
    event_bytes,
    eventually,
    offline_scores,
    stored_features,
    train_small_model,
)
from tests.support.kafka_io import committed_lag, produce, read_until
from tests.support.names import Names, settings_for
from tests.support.private_servers import free_ports
from tests.support.scorer_process import ScorerProcess

pytestmark = pytest.mark.integration


def _replace_model(source: Path, target: Path) -> None:
    """Atomically replace model and metadata (write aside, then rename)."""
    for src, dst in ((source, target), (metadata_path(source), metadata_path(target))):
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


async def test_model_swap_under_load_loses_nothing_and_refuses_a_bad_model(
    kafka_bootstrap: str, mongo_url: str, mongo_db: Any, names: Names, tmp_path: Path
) -> None:
    v1 = train_small_model(tmp_path / "v1" / "model.txt", version="1")
    v2 = train_small_model(tmp_path / "v2" / "model.txt", version="2")
    live = tmp_path / "live" / "model.txt"
    live.parent.mkdir()
    _replace_model(v1, live)
    await mongo_db["entity_features"].insert_many(entity_documents(50))
    settings = settings_for(
        names,
        live,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        model={"reload_interval_s": 0.1},
        stream={"max_batch_size": 50},
    )
    await ensure_topics(settings.kafka)
    app, _, runtime = build_app(settings)
    await app.start()
    total = 0
    try:

        async def wave(count: int) -> None:
            nonlocal total
            values = [event_bytes(total + i, f"user-{(total + i) % 60}") for i in range(count)]
            await produce(kafka_bootstrap, names.input_topic, values, [None] * count)
            total += count

        await wave(1_000)
        _replace_model(v2, live)  # while the first wave is being scored
        await wave(1_000)
        assert await eventually(
            lambda: asyncio.sleep(
                0, runtime.reloader is not None and runtime.reloader.stats.loaded >= 1
            ),
            20,
        )
        await wave(500)
        # A corrupt model file (with metadata claiming version 3) is refused.
        corrupt = tmp_path / "bad" / "model.txt"
        corrupt.parent.mkdir()
        corrupt.write_text("tree\nthis is not a LightGBM model\n")
        metadata_path(corrupt).write_text(json.dumps({"name": "fraud", "version": "3"}))
        _replace_model(corrupt, live)
        assert await eventually(
            lambda: asyncio.sleep(
                0, runtime.reloader is not None and runtime.reloader.stats.refused >= 1
            ),
            20,
        )
        await wave(500)
        outputs = await read_until(kafka_bootstrap, [names.output_topic], total, timeout_s=120)
    finally:
        await app.stop()

    predictions = [json.loads(r.value) for r in outputs]
    ids = Counter(p["event_id"] for p in predictions)
    assert len(ids) == total
    assert max(ids.values()) == 1
    versions = Counter(p["model"]["version"] for p in predictions)
    sent = {f"e-{i:06d}": event_bytes(i, f"user-{i % 60}") for i in range(total)}
    stored = stored_features(entity_documents(50))
    assert set(versions) == {"1", "2"}, versions
    assert versions["2"] >= 1_000  # everything after the swap was noticed
    # Each prediction's score is what the model it names gives offline.
    for version, path in (("1", v1), ("2", v2)):
        model = load_model(path)
        sample = [p for p in predictions if p["model"]["version"] == version][:100]
        events = [json.loads(sent[p["event_id"]]) for p in sample]
        expected = offline_scores(model, events, stored)
        assert [p["score"] for p in sample] == [expected[p["event_id"]] for p in sample], version
    assert runtime.reloader is not None
    assert runtime.reloader.stats.refused >= 1
    # Refused before LightGBM reads it (LightGBM would abort on a file cut inside its trees).
    assert "is incomplete: its trees do not end" in (runtime.reloader.stats.last_error or "")


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        if base != name:
            continue
        if wanted and not all(part in label_text for part in wanted.split(",")):
            continue
        total += float(value)
        found = True
    assert found, f"{name}{{{wanted}}} not in metrics"
    return total


async def test_metrics_count_what_was_sent_and_lag_falls_to_zero(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    kafka_client: str,
) -> None:
    await mongo_db["entity_features"].insert_many(entity_documents(20))
    (port,) = free_ports(1)
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
        stream={"metrics_port": port},
    )
    await ensure_topics(settings.kafka)
    values = [event_bytes(i, f"user-{i % 30}") for i in range(1_200)]
    values += [b"not json"] * 7 + [b'{"event_id": "x"}'] * 5 + [b"\xff"] * 3
    await produce(kafka_bootstrap, names.input_topic, values, [None] * len(values))
    app, _, _ = build_app(settings)
    await app.start()
    try:
        await read_until(
            kafka_bootstrap, [names.output_topic, names.dlq_topic], len(values), timeout_s=60
        )
        async with httpx.AsyncClient() as client:

            async def drained() -> bool:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                return _metric(text, "streamscore_commits_total") > 0 and all(
                    float(line.rpartition(" ")[2]) == 0
                    for line in text.splitlines()
                    if line.startswith("streamscore_consumer_lag{")
                )

            assert await eventually(drained, 20)
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await app.stop()

    assert _metric(text, "streamscore_records_consumed_total") == len(values)
    assert _metric(text, "streamscore_records_scored_total") == 1_200
    assert _metric(text, "streamscore_records_dead_lettered_total", reason="invalid_json") == 7
    assert _metric(text, "streamscore_records_dead_lettered_total", reason="invalid_event") == 5
    assert _metric(text, "streamscore_records_dead_lettered_total", reason="invalid_encoding") == 3
    assert _metric(text, "streamscore_enrichment_total", outcome="hit") == 20 * 40
    assert _metric(text, "streamscore_enrichment_total", outcome="miss") == 10 * 40
    lag_lines = [ln for ln in text.splitlines() if ln.startswith("streamscore_consumer_lag{")]
    assert len(lag_lines) == 4
    assert _metric(text, "streamscore_consumed_batch_records_count") >= 1
    assert _metric(text, "streamscore_enrich_seconds_sum") > 0
    assert _metric(text, "streamscore_stream_stage_seconds_count", stage="commit") >= 1
    assert _metric(text, "streamscore_model_info", version="1") == 1
    assert "streamscore_event_loop_lag_seconds_bucket" in text
    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}


async def test_two_workers_share_partitions_and_a_killed_one_is_restarted(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    tmp_path: Path,
) -> None:
    await mongo_db["entity_features"].insert_many(entity_documents(20))
    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    await ensure_topics(settings.kafka)
    (metrics_base,) = free_ports(1)
    scorer = ScorerProcess(
        settings,
        tmp_path / "scorer.log",
        workers=2,
        STREAMSCORE_STREAM__METRICS_PORT=str(metrics_base),
    ).start()
    try:

        async def two_members() -> bool:
            state, members = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and members == 2

        assert await eventually(two_members, 60), scorer.log()[-3000:]
        workers = scorer.children()
        assert len(workers) == 2
        first = [event_bytes(i, f"user-{i % 25}") for i in range(2_000)]
        await produce(kafka_bootstrap, names.input_topic, first, [None] * len(first))
        os.kill(workers[0], signal.SIGKILL)

        async def replaced() -> bool:
            now = scorer.children()
            return len(now) == 2 and workers[0] not in now

        assert await eventually(replaced, 30), scorer.log()[-3000:]
        assert await eventually(two_members, 60), scorer.log()[-3000:]
        second = [event_bytes(i, f"user-{i % 25}", prefix="f") for i in range(2_000)]
        await produce(kafka_bootstrap, names.input_topic, second, [None] * len(second))
        await read_until(kafka_bootstrap, [names.output_topic], 4_000, timeout_s=120)
        assert scorer.stop() == ExitCode.OK
    finally:
        scorer.kill()
    report = await audit(settings)
    assert report.events_in == 4_000
    assert report.lost == 0, report.to_text()
    assert report.unexpected_predictions == 0
    assert "worker 0 (pid" in scorer.log() or "worker 1 (pid" in scorer.log()


SESSION_TIMEOUT = {"session_timeout_ms": 2_000_000, "max_poll_interval_ms": 2_000_000}
TRANSACTION_TIMEOUT = {"transaction_timeout_ms": 1_000_000}


@pytest.mark.parametrize(
    ("client", "kafka", "stream", "named"),
    [
        ("aiokafka", SESSION_TIMEOUT, {}, "InvalidSessionTimeoutError"),
        ("confluent", SESSION_TIMEOUT, {}, "INVALID_SESSION_TIMEOUT"),
        ("aiokafka", TRANSACTION_TIMEOUT, {"delivery": "exactly_once"}, "InvalidTransaction"),
        ("confluent", TRANSACTION_TIMEOUT, {"delivery": "exactly_once"}, "INVALID_TRANSACTION"),
    ],
    ids=["session-aiokafka", "session-confluent", "transaction-aiokafka", "transaction-confluent"],
)
async def test_a_setting_the_broker_refuses_stops_the_scorer_with_exit_code_2(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    tmp_path: Path,
    client: str,
    kafka: dict[str, int],
    stream: dict[str, str],
    named: str,
) -> None:
    """A restart would be refused again, so the exit code says configuration, and the start-up
    leaves nothing open.

    * A session timeout beyond the broker's group.max.session.timeout.ms (30 min by default):
      aiokafka raises it from its start; librdkafka reports it from every poll and would retry
      it forever.
    * Exactly-once, a transaction timeout above max.transaction.timeout.ms (15 min by
      default): aiokafka raised it from every assignment's producer start, so the scorer
      rejoined the group ~90 times a second, leaking a producer each time, and never stopped;
      librdkafka's exited 1 (not fatal: a supervisor would restart it for ever).
    """
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={**kafka, "client": client},
        stream=stream,
    )
    # the helper's own session timeout would win over the settings passed on
    refused = str(settings.kafka.session_timeout_ms)
    scorer = ScorerProcess(
        settings, tmp_path / "scorer.log", STREAMSCORE_KAFKA__SESSION_TIMEOUT_MS=refused
    ).start()
    try:
        assert scorer.wait(timeout=90) == ExitCode.CONFIGURATION, scorer.log()[-3000:]
    finally:
        scorer.kill()
    log = scorer.log()
    assert "refused a setting" in log
    assert named in log
    assert "aclose()" not in log  # the failed start closed what it had opened
    assert "Unclosed AIOKafkaProducer" not in log
    assert log.count('"event": "rejoin"') == 0  # no retry loop before the halt
