"""``produce`` and ``audit`` with either Kafka client, on the real servers: what one client
wrote the other reads; the audit's counts are the counts that were sent and scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from streams.audit import audit
from streams.offsets import topic_partitions
from streams.topics import ensure_topics
from streamscore_cli.produce import produce
from tests.support.kafka_io import read_until, score_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

EVENTS = 2_000


async def test_produce_score_and_audit_with_one_client(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    kafka_client: str,
) -> None:
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client, "compression_type": "lz4"},
    )
    await ensure_topics(settings.kafka)
    sent = await produce(settings.kafka, EVENTS, bad_ratio=0.05, progress=False, seed=7)
    assert sent == EVENTS
    written = await read_until(kafka_bootstrap, [names.input_topic], EVENTS, timeout_s=30)
    assert len(written) == EVENTS  # read back with aiokafka: nothing missing, nothing extra

    outputs, runtime = await score_until(settings, EVENTS, 90)
    assert runtime.exit_code == 0
    dead = sum(1 for r in outputs if r.topic == names.dlq_topic)
    assert 40 <= dead <= 160  # ~5% bad records

    report = await audit(settings)
    assert report.ok, report.to_text()
    assert report.events_in == EVENTS
    assert report.dead_letters == dead
    assert report.predictions == EVENTS - dead
    assert (report.lost, report.duplicated_predictions, report.unexpected_predictions) == (0, 0, 0)


async def test_librdkafka_audit_reads_transactional_topics_to_their_end(
    kafka_bootstrap: str, mongo_url: str, mongo_db: Any, names: Names, model_path: Path
) -> None:
    """Exactly-once outputs end in transaction markers: the librdkafka reader still finds the
    end of every partition (read_committed and read_uncommitted) and counts the same."""
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        stream={"delivery": "exactly_once"},
    )
    await ensure_topics(settings.kafka)
    await produce(settings.kafka, 500, bad_ratio=0.05, progress=False, seed=3)
    await score_until(settings, 500, 90)

    by_aiokafka = await audit(settings)
    reader = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"client": "confluent"})}
    )
    for isolation in ("read_committed", "read_uncommitted"):
        by_librdkafka = await audit(reader, isolation)
        assert by_librdkafka.ok, by_librdkafka.to_text()
        assert by_librdkafka.events_in == by_aiokafka.events_in == 500
        assert by_librdkafka.predictions == by_aiokafka.predictions
        assert by_librdkafka.dead_letters == by_aiokafka.dead_letters


async def test_the_audit_says_when_retention_deleted_inputs_and_does_not_fail_on_their_outputs(
    kafka_bootstrap: str, mongo_url: str, mongo_db: Any, names: Names, model_path: Path
) -> None:
    """Records retention deleted from the input leave predictions of no input behind: counted
    as unexpected, named as deleted, not a failure; outputs deleted make lost a maybe."""
    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    await ensure_topics(settings.kafka)
    await produce(settings.kafka, 300, bad_ratio=0.0, progress=False, seed=5)
    await score_until(settings, 300, 90)
    assert (await audit(settings)).trimmed == []

    inputs = await topic_partitions(settings.kafka, [names.input_topic])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({inputs[0]: RecordsToDelete(10)}, timeout_ms=10_000)
        report = await audit(settings)
        assert report.events_in == 290
        assert report.unexpected_predictions == 10
        assert report.input_trimmed
        assert report.ok, report.to_text()
        text = report.to_text()
        assert f"input {names.input_topic}: partition {inputs[0].partition} from offset 10" in text
        assert "may be of input records retention deleted: not a failure" in text

        outputs = await topic_partitions(settings.kafka, [names.output_topic])
        # the oldest 30 predictions of every partition: more than the 10 inputs deleted
        await admin.delete_records({tp: RecordsToDelete(30) for tp in outputs}, timeout_ms=10_000)
        report = await audit(settings)
        assert report.lost > 0
        assert not report.ok  # a loss cannot be told from a deletion: still a failure
        assert "lost may count events whose outputs retention deleted" in report.to_text()
    finally:
        await admin.close()
