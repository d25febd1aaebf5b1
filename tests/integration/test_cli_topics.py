"""The CLI on topics that do not exist yet: ``produce`` creates its topic as the scorer would
(or says clearly that it may not), ``audit`` refuses to call a missing topic "nothing lost"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.topics import list_topics
from streamscore_cli.main import main
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration


def _env(monkeypatch: pytest.MonkeyPatch, names: Names, bootstrap: str) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("STREAMSCORE_KAFKA__INPUT_TOPIC", names.input_topic)
    monkeypatch.setenv("STREAMSCORE_KAFKA__OUTPUT_TOPIC", names.output_topic)
    monkeypatch.setenv("STREAMSCORE_KAFKA__DLQ_TOPIC", names.dlq_topic)


def test_produce_creates_a_missing_topic_and_audit_refuses_one(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    names: Names,
    kafka_bootstrap: str,
) -> None:
    _env(monkeypatch, names, kafka_bootstrap)
    settings = settings_for(names, Path("unused"), bootstrap=kafka_bootstrap)

    assert main(["audit"]) == 1
    assert f"the input topic {names.input_topic} does not exist" in capsys.readouterr().err

    monkeypatch.setenv("STREAMSCORE_KAFKA__CREATE_TOPICS", "false")
    assert main(["produce", "--count", "5"]) == 1
    assert "does not exist and STREAMSCORE_KAFKA__CREATE_TOPICS is false" in capsys.readouterr().err
    assert names.input_topic not in asyncio.run(list_topics(settings.kafka))

    monkeypatch.setenv("STREAMSCORE_KAFKA__CREATE_TOPICS", "true")
    assert main(["produce", "--count", "5"]) == 0
    assert f"sent 5 events to {names.input_topic}" in capsys.readouterr().out
    assert names.input_topic in asyncio.run(list_topics(settings.kafka))


async def test_peek_shows_every_header_as_sent(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path
) -> None:
    """``demo peek`` (what the demo summary suggests) prints null, empty, binary and repeated
    header values, each as sent, in order."""
    import json

    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics
    from streamscore_cli.demo import peek

    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    await ensure_topics(settings.kafka)
    headers = [("empty", b""), ("none", None), ("bin", b"\xff\x00"), ("empty", b"again")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.kafka.input_topic,
            b"{}",
            key=b"k",
            headers=headers,
        )
    finally:
        await producer.stop()
    [line] = await peek(settings, settings.kafka.input_topic, 3)
    shown = json.loads(line)
    assert shown["key"] == "k"
    assert shown["value"] == "{}"
    assert shown["headers"] == [
        ["empty", ""],
        ["none", None],
        ["bin", "\ufffd\x00"],
        ["empty", "again"],
    ]


async def test_with_topic_creation_off_the_scorer_waits_for_missing_topics_and_loses_nothing(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: object,
    names: Names,
    model_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """STREAMSCORE_KAFKA__CREATE_TOPICS=false and the output topics absent: the scorer reads
    nothing and says what it waits for, then scores every event once they exist."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streams import runtime as runtime_module
    from streams.app import build_app
    from streams.topics import ensure_topics
    from tests.support.helpers import event_bytes
    from tests.support.kafka_io import produce, read_until

    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"create_topics": False},
    )
    await ensure_topics(settings.kafka, [names.input_topic])
    await produce(
        kafka_bootstrap,
        names.input_topic,
        [event_bytes(i, "user-000001") for i in range(30)] + [b"not json"],
        [None] * 31,
    )
    app, _, runtime = build_app(settings)
    starting = asyncio.create_task(app.start())
    try:
        await asyncio.sleep(3 * runtime_module.TOPICS_WAIT_S)
        assert not starting.done()  # still waiting: nothing consumed yet
        waited = [r for r in caplog.records if getattr(r, "event", None) == "topics_missing"]
        assert len(waited) == 1  # said once, not every look
        assert names.output_topic in waited[0].getMessage()
        assert names.dlq_topic in waited[0].getMessage()
        assert "STREAMSCORE_KAFKA__CREATE_TOPICS is false" in waited[0].getMessage()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, 2, 1) for t in (names.output_topic, names.dlq_topic)]
            )
        finally:
            await admin.close()
        await asyncio.wait_for(starting, 60)
        outputs = await read_until(
            kafka_bootstrap, [names.output_topic, names.dlq_topic], 31, timeout_s=60
        )
    finally:
        if not starting.done():
            starting.cancel()
        await app.stop()
    assert sorted(r.topic for r in outputs).count(names.output_topic) == 30
    assert [r.topic for r in outputs].count(names.dlq_topic) == 1
    assert runtime.exit_code == 0
