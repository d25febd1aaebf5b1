"""``produce`` and ``audit`` with either Kafka client, on the real servers: what one client
wrote the other reads; the audit's counts are the counts that were sent and scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.audit import audit
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
