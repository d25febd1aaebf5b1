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
