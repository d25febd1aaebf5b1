"""Input written by a transactional producer, on the real broker with either client: records
of aborted transactions are never scored (read_committed, the default); committed ones are,
once each; the audit owes nothing for the aborted ones."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.audit import audit
from streams.topics import ensure_topics
from tests.support.helpers import event_bytes
from tests.support.kafka_io import read_until, score_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration


async def write_transactions(bootstrap: str, topic: str) -> tuple[list[str], list[str]]:
    """Committed, aborted, then committed again (the same partitions): the event ids of the
    committed records and of the aborted ones."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"input-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    committed: list[str] = []
    aborted: list[str] = []
    try:
        for round_, keep in (("a", True), ("b", False), ("c", True)):
            await producer.begin_transaction()
            for i in range(40):
                value = event_bytes(i, f"user-{i % 7}", prefix=f"tx-{round_}")
                await producer.send_and_wait(topic, value, key=f"k{i % 4}".encode())
                (committed if keep else aborted).append(json.loads(value)["event_id"])
            if keep:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()
    return committed, aborted


async def test_records_of_aborted_transactions_are_not_scored(
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
        kafka={"client": kafka_client},
    )
    await ensure_topics(settings.kafka)
    committed, aborted = await write_transactions(kafka_bootstrap, names.input_topic)
    # Written they are: a read_uncommitted reader sees all 120.
    assert len(await read_until(kafka_bootstrap, [names.input_topic], 120, 30)) == 120

    # The scorer runs until the committed records' outputs arrived, and 2 s more (extras).
    outputs, runtime = await score_until(settings, len(committed), 90)
    assert runtime.exit_code == 0
    scored = [json.loads(r.value)["event_id"] for r in outputs if r.topic == names.output_topic]
    assert sorted(scored) == sorted(committed)
    assert not set(scored) & set(aborted)
    assert len(outputs) == len(committed)  # no dead letters either

    report = await audit(settings)
    assert report.ok, report.to_text()
    assert (report.events_in, report.predictions, report.lost) == (len(committed), 80, 0)
