"""Records and documents that used to wedge or lose batches, on the real servers.

An unreadable place in the input topic halts the scorer, naming it, without losing or skipping
anything; a dead letter of a record at the broker's size limit is cut to fit; a record timestamp
past the year 9999 is a dead letter (or ignored when the event has its own time); a stored
document the driver cannot decode scores as a miss instead of failing its batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnsupportedCodecError
from bson import DatetimeMS

from scoring import LoadedModel
from settings import Settings
from streams import lenient_records
from streams.app import build_app
from streams.audit import audit
from streams.exit_codes import ExitCode
from streams.topics import ensure_topics
from tests.support.helpers import offline_scores
from tests.support.kafka_io import committed_lag, read_until, score_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _event(event_id: str, entity: str = "user-1", **extra: Any) -> bytes:
    return json.dumps(
        {"event_id": event_id, "entity_id": entity, "features": {"amount": 5.0}, **extra}
    ).encode()


async def _send(
    bootstrap: str, topic: str, records: Sequence[tuple[int, bytes, int | None]]
) -> None:
    """(partition, value, timestamp_ms) in order, each acknowledged before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20)
    await producer.start()
    try:
        for partition, value, timestamp in records:
            await producer.send_and_wait(
                topic, value, key=b"k", partition=partition, timestamp_ms=timestamp
            )
    finally:
        await producer.stop()


async def _wait_for(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.fixture
def poison_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches holding a record whose value starts with ``POISON`` fail to decode, as a batch in
    a codec the client cannot read does (the fetch raises; records drained before are lost)."""
    original = lenient_records._LenientBatch.__iter__

    def failing(self: Any) -> Any:
        records = list(original(self))
        if any((r.value or b"").startswith(b"POISON") for r in records):
            raise UnsupportedCodecError("simulated: no library for this codec")
        return iter(records)

    monkeypatch.setattr(lenient_records._LenientBatch, "__iter__", failing)


READABLE = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)]


async def _poisoned_partition_1(settings: Settings) -> None:
    """5 + 3 readable events on partition 0, 3 records starting with ``POISON`` on 1."""
    bootstrap = settings.kafka.bootstrap_servers
    await ensure_topics(settings.kafka)
    await _send(
        bootstrap,
        settings.kafka.input_topic,
        [(0, _event(f"a{i}"), None) for i in range(5)]
        + [(1, b"POISON" + _event(f"p{i}"), None) for i in range(3)]
        + [(0, _event(f"b{i}"), None) for i in range(3)],
    )


async def _halts_at_partition_1(settings: Settings) -> None:
    """The scorer halts with exit 4 naming partition 1 at offset 0; whatever it scored came
    from partition 0, once; nothing on partition 1 was committed or dead-lettered."""
    kafka = settings.kafka
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        await _wait_for(lambda: runtime.exit_code != 0, timeout_s=60)
    finally:
        await app.stop()
    assert runtime.exit_code == ExitCode.UNREADABLE_RECORD
    assert runtime.fetch_guard.halted is not None
    assert f"topic {kafka.input_topic} partition 1 at offset 0" in runtime.fetch_guard.halted
    outputs = await read_until(kafka.bootstrap_servers, [kafka.output_topic, kafka.dlq_topic], 8, 5)
    ids = Counter(json.loads(r.value)["event_id"] for r in outputs if r.topic != kafka.dlq_topic)
    assert set(ids) <= set(READABLE)
    assert set(ids.values()) <= {1}
    assert not [r for r in outputs if r.topic == kafka.dlq_topic]
    lag = await committed_lag(kafka.bootstrap_servers, kafka.group_id, kafka.input_topic)
    assert lag[1] == 3


async def _restart_reads_everything_once(settings: Settings) -> None:
    """After the fix a restart reads partition 1 from where it stopped: never skipped."""
    kafka = settings.kafka
    outputs, runtime = await score_until(settings, 11, 60)
    assert runtime.exit_code == ExitCode.OK
    ids = Counter(json.loads(r.value)["event_id"] for r in outputs if r.topic != kafka.dlq_topic)
    assert ids == Counter(READABLE)
    dead = [r for r in outputs if r.topic == kafka.dlq_topic]
    assert sorted(dict(r.headers)["streamscore.source.offset"] for r in dead) == [b"0", b"1", b"2"]
    assert {dict(r.headers)["streamscore.error.kind"] for r in dead} == {b"invalid_json"}
    report = await audit(settings)
    assert report.ok, report.to_text()
    assert (report.lost, report.duplicated_predictions) == (0, 0)


def _poison_settings(
    names: Names, model_path: Path, bootstrap: str, mongo_url: str, client: str
) -> Settings:
    return settings_for(
        names,
        model_path,
        bootstrap=bootstrap,
        mongo_url=mongo_url,
        kafka={"topic_partitions": 2, "client": client},
        stream={"max_fetch_attempts": 3, "retry_max_backoff_s": 0.2},
    )


async def test_an_unreadable_place_halts_naming_it_and_nothing_is_lost_or_skipped(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    poison_unreadable: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka: a batch in a codec the client cannot read (simulated in its decoder)."""
    settings = _poison_settings(names, model_path, kafka_bootstrap, mongo_url, "aiokafka")
    await _poisoned_partition_1(settings)
    await _halts_at_partition_1(settings)
    monkeypatch.undo()  # the fix: the codec can be read again
    await _restart_reads_everything_once(settings)


def _partition_dir(bootstrap: str, topic: str, partition: int) -> Path:
    """The local broker's log folder of one partition (``infra/local-servers.sh`` layout)."""
    port = bootstrap.rsplit(":", 1)[-1]
    local = Path(os.environ.get("STREAMSCORE_LOCAL_DIR", ROOT / ".local"))
    folder = local / "kafka" / f"data-{port}" / f"{topic}-{partition}"
    if not folder.is_dir():
        pytest.skip(f"needs the local broker's data folder ({folder}); a container's is not here")
    return folder


def _flip_on_disk(folder: Path, old: bytes, new: bytes) -> int:
    """Replace ``old`` by ``new`` (same length) in the partition's segment files, under the
    broker: the batches keep their framing, but their CRCs no longer match."""
    changed = 0
    for segment in folder.glob("*.log"):
        data = segment.read_bytes()
        if old in data:
            changed += data.count(old)
            with segment.open("r+b") as f:
                f.write(data.replace(old, new))
    return changed


async def test_a_corrupt_batch_on_the_broker_halts_naming_it_and_is_read_after_repair(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    kafka_client: str,
) -> None:
    """A real unreadable record: batches whose bytes on the broker's disk no longer match their
    CRC. Either client halts naming the place; after the repair a restart reads it all."""
    settings = _poison_settings(names, model_path, kafka_bootstrap, mongo_url, kafka_client)
    await _poisoned_partition_1(settings)
    folder = _partition_dir(kafka_bootstrap, names.input_topic, 1)
    assert _flip_on_disk(folder, b"POISON", b"PO1SON") == 3
    await _halts_at_partition_1(settings)
    assert _flip_on_disk(folder, b"PO1SON", b"POISON") == 3  # the repair
    await _restart_reads_everything_once(settings)


async def test_an_invalid_record_at_the_size_limit_gets_a_dead_letter_cut_to_fit(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, kafka_client: str
) -> None:
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
        stream={"max_record_bytes": 4 << 20},
    )
    await ensure_topics(settings.kafka)
    huge = b"{" + b"x" * (1_048_400 - 1)  # about the largest record the broker accepts
    await _send(
        kafka_bootstrap,
        names.input_topic,
        [(0, _event("before"), None), (0, huge, None), (0, _event("after"), None)],
    )
    outputs, runtime = await score_until(settings, 3, 60)
    assert runtime.exit_code == ExitCode.OK
    ids = sorted(json.loads(r.value)["event_id"] for r in outputs if r.topic != names.dlq_topic)
    assert ids == ["after", "before"]
    (dead,) = [r for r in outputs if r.topic == names.dlq_topic]
    headers = dict(dead.headers)
    assert headers["streamscore.error.kind"] == b"invalid_json"
    assert headers["streamscore.value.truncated"] == b"true"
    assert headers["streamscore.value.original_size"] == str(len(huge)).encode()
    assert headers["streamscore.source.offset"] == b"1"
    assert 1_000_000 < len(dead.value) < len(huge)
    assert huge.startswith(dead.value)
    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}


async def test_dead_letters_whose_key_or_headers_cannot_fit_are_cut_and_say_what_was_cut(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, kafka_client: str
) -> None:
    """A key of about the broker's limit, and headers of more than it (compressed, so the broker
    takes them): each becomes a dead letter that fits, never a halt; the marks name what was
    cut and nothing that was not."""
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
    )
    await ensure_topics(settings.kafka)
    big_key = b"k" * 1_048_400
    big_headers = [("trace", b"t" * 1_100_000), ("null", None)]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        max_request_size=4 << 20,
        compression_type="gzip",
    )
    await producer.start()
    try:
        for key, value, headers in [
            (b"u", _event("before"), []),
            (big_key, b"x", []),
            (big_key, None, []),  # a tombstone
            (b"u", b"not json", big_headers),
            (b"u", _event("after"), []),
        ]:
            await producer.send_and_wait(
                names.input_topic, value, key=key, partition=0, headers=headers
            )
    finally:
        await producer.stop()
    outputs, runtime = await score_until(settings, 5, 90)
    assert runtime.exit_code == ExitCode.OK
    ids = sorted(json.loads(r.value)["event_id"] for r in outputs if r.topic != names.dlq_topic)
    assert ids == ["after", "before"]
    dead = {
        int(dict(r.headers)["streamscore.source.offset"]): r
        for r in outputs
        if r.topic == names.dlq_topic
    }
    assert sorted(dead) == [1, 2, 3]
    for offset in (1, 2):
        marks = dict(dead[offset].headers)
        assert marks["streamscore.key.truncated"] == b"true"
        assert marks["streamscore.key.original_size"] == str(len(big_key)).encode()
        assert 1_000_000 < len(dead[offset].key) < len(big_key)
        assert big_key.startswith(dead[offset].key)
    assert dead[1].value == b"x"  # the key made room for it
    assert "streamscore.value.truncated" not in dict(dead[1].headers)
    assert dead[2].value is None  # still a tombstone
    assert dict(dead[2].headers)["streamscore.error.kind"] == b"tombstone"
    marks = dict(dead[3].headers)
    assert (dead[3].key, dead[3].value) == (b"u", b"not json")  # whole: only headers were cut
    assert marks["streamscore.headers.dropped"] == b"2"
    assert "trace" not in marks
    assert "streamscore.value.truncated" not in marks
    assert "streamscore.key.truncated" not in marks
    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}


async def test_dead_letters_fit_a_dead_letter_topic_whose_limit_is_below_the_producers(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, kafka_client: str
) -> None:
    """A dead-letter topic with ``max.message.bytes=50000``: an invalid record of 200 kB is
    dead-lettered cut to that limit (not refused by the broker, which left aiokafka's
    idempotent producer unable to write to the partition again), after a small dead letter
    on the same partition; one of 45 kB with a 10 kB header of its own is cut only as far as
    needed, its header kept."""
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names.dlq_topic, 1, 1, topic_configs={"max.message.bytes": "50000"})]
        )
    finally:
        await admin.close()
    await ensure_topics(settings.kafka)
    own_header = [("trace", b"t" * 10_000)]
    await _send(
        kafka_bootstrap,
        names.input_topic,
        [
            (0, b"small, not json", None),
            (0, b"w" * 200_000, None),
            (0, _event("scored"), None),
        ],
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            names.input_topic, b"v" * 45_000, partition=0, headers=own_header
        )
    finally:
        await producer.stop()
    outputs, runtime = await score_until(settings, 4, 60)
    assert runtime.exit_code == ExitCode.OK
    dead = sorted(
        (r for r in outputs if r.topic == names.dlq_topic),
        key=lambda r: int(dict(r.headers)["streamscore.source.offset"]),
    )
    assert [dict(d.headers)["streamscore.source.offset"] for d in dead] == [b"0", b"1", b"3"]
    assert dead[0].value == b"small, not json"
    big = dict(dead[1].headers)
    assert big["streamscore.value.truncated"] == b"true"
    assert big["streamscore.value.original_size"] == b"200000"
    assert 45_000 < len(dead[1].value) < 50_000  # cut to the topic's limit, not halved
    with_header = dict(dead[2].headers)
    assert with_header["trace"] == b"t" * 10_000  # its own header kept
    assert "streamscore.headers.dropped" not in with_header
    assert 30_000 < len(dead[2].value) < 45_000
    assert [json.loads(r.value)["event_id"] for r in outputs if r.topic == names.output_topic] == [
        "scored"
    ]
    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}


async def test_a_dead_letter_topic_limit_lowered_while_the_scorer_runs_is_met_without_a_halt(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path
) -> None:
    """The dead-letter topic's ``max.message.bytes`` drops to 50,000 after the scorer read it
    at start: the broker refuses the dead letter of a 200 kB record, which is halved until it
    fits; the refusals leave aiokafka's producer stuck on a sequence gap, so it is replaced,
    and nothing halts."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streams.app import build_app
    from tests.support.helpers import eventually
    from tests.support.kafka_io import end_total

    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    await ensure_topics(settings.kafka)
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        await _send(kafka_bootstrap, names.input_topic, [(0, b"small, not json", None)])

        async def dead_letters(n: int) -> bool:
            return await end_total(kafka_bootstrap, names.dlq_topic) >= n

        assert await eventually(lambda: dead_letters(1), 30)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC,
                        names.dlq_topic,
                        configs={"max.message.bytes": "50000"},
                    )
                ]
            )
        finally:
            await admin.close()
        await asyncio.sleep(1)  # the broker applies topic configs asynchronously
        await _send(
            kafka_bootstrap,
            names.input_topic,
            [(0, b"w" * 200_000, None), (0, b"also not json", None), (0, _event("ok"), None)],
        )
        outputs = await read_until(kafka_bootstrap, [names.output_topic, names.dlq_topic], 4, 90)
        assert runtime.exit_code == ExitCode.OK
        assert runtime.delivery is not None
        assert runtime.delivery.halted is None
    finally:
        await app.stop()
    dead = [r for r in outputs if r.topic == names.dlq_topic]
    by_offset = {dict(r.headers)["streamscore.source.offset"]: r for r in dead}
    assert sorted(by_offset) == [b"0", b"1", b"2"]
    assert len(dead) == 3  # nothing repeated
    big = by_offset[b"1"]
    assert dict(big.headers)["streamscore.value.truncated"] == b"true"
    assert len(big.value) < 50_000
    assert big.value == b"w" * len(big.value)
    assert [json.loads(r.value)["event_id"] for r in outputs if r.topic == names.output_topic] == [
        "ok"
    ]


async def test_under_exactly_once_a_lowered_dead_letter_limit_is_met_by_cutting_smaller(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, kafka_client: str
) -> None:
    """Exactly-once reads a refused batch again rather than re-sending: when Kafka refused a
    dead letter as too large (the topic's limit lowered while running), later dead letters are
    cut smaller, and the batch read again commits; nothing halts, lost or repeated."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streams.app import build_app
    from tests.support.helpers import eventually
    from tests.support.kafka_io import committed_lag as lag_of

    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
        stream={"delivery": "exactly_once"},
    )
    await ensure_topics(settings.kafka)
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            limit = {"max.message.bytes": "20000"}
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, names.dlq_topic, configs=limit)]
            )
        finally:
            await admin.close()
        await asyncio.sleep(1)  # the broker applies topic configs asynchronously
        records = [(p, b"w" * 100_000, None) for p in (0, 1, 2, 3)]
        records += [(p, _event(f"ok-{p}"), None) for p in (0, 1, 2, 3)]
        await _send(kafka_bootstrap, names.input_topic, records)

        async def committed() -> bool:
            lag = await lag_of(kafka_bootstrap, names.group_id, names.input_topic)
            return sum(lag.values()) == 0 and len(lag) == 4

        assert await eventually(committed, 90)
        assert runtime.exit_code == ExitCode.OK
    finally:
        await app.stop()
    report = await audit(settings, "read_committed")
    assert report.ok, report.to_text()  # exactly-once: nothing lost, nothing repeated
    assert (report.predictions, report.dead_letters) == (4, 4)


async def test_a_record_timestamp_past_9999_is_an_invalid_event_unless_the_event_has_a_time(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path
) -> None:
    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # Kafka 4 refuses timestamps more than an hour ahead unless the topic allows them
        await admin.create_topics(
            [
                NewTopic(
                    names.input_topic,
                    2,
                    1,
                    topic_configs={"message.timestamp.after.max.ms": str(2**63 - 1)},
                )
            ]
        )
    finally:
        await admin.close()
    await ensure_topics(settings.kafka)
    year_10000 = 253_402_300_800_000 + 1_000
    await _send(
        kafka_bootstrap,
        names.input_topic,
        [
            (0, _event("no-time"), year_10000),
            (0, _event("own-time", event_time="2026-11-25T10:00:00Z"), year_10000),
            (1, _event("normal"), None),
        ],
    )
    outputs, runtime = await score_until(settings, 3, 60)
    assert runtime.exit_code == ExitCode.OK
    predictions = {
        json.loads(r.value)["event_id"]: json.loads(r.value)
        for r in outputs
        if r.topic == names.output_topic
    }
    assert sorted(predictions) == ["normal", "own-time"]
    assert predictions["own-time"]["event_time"] == "2026-11-25T10:00:00Z"
    (dead,) = [r for r in outputs if r.topic == names.dlq_topic]
    assert dict(dead.headers)["streamscore.error.kind"] == b"invalid_event"
    assert b"out of range" in dict(dead.headers)["streamscore.error.message"]
    assert runtime.processor is not None
    assert runtime.processor.stats.retries == 0
    report = await audit(settings)
    assert report.ok, report.to_text()
    assert (report.lost, report.duplicated_predictions) == (0, 0)


async def test_a_stored_document_the_driver_cannot_decode_scores_as_a_miss(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
) -> None:
    """A date past the year 9999 under a model feature: PyMongo raises ``InvalidBSON`` for the
    whole reply. (A string that is not UTF-8 does the same on MongoDB; the local servers
    replace such bytes when they store them, so a date is what reproduces it everywhere.)"""
    good = {"account_age_days": 400.0, "country_risk": 0.3}
    await mongo_db["entity_features"].insert_many(
        [
            {"_id": "user-good", "features": good},
            {"_id": "user-bad", "features": {"account_age_days": DatetimeMS(2**62)}},
        ]
    )
    settings = settings_for(names, model_path, bootstrap=kafka_bootstrap, mongo_url=mongo_url)
    await ensure_topics(settings.kafka)
    await _send(
        kafka_bootstrap,
        names.input_topic,
        [(0, _event("g", "user-good"), None), (0, _event("b", "user-bad"), None)],
    )
    outputs, runtime = await score_until(settings, 2, 60)
    predictions = {json.loads(r.value)["event_id"]: json.loads(r.value) for r in outputs}
    assert {k: p["enrichment"] for k, p in predictions.items()} == {"g": "hit", "b": "miss"}
    events = [json.loads(_event("g", "user-good")), json.loads(_event("b", "user-bad"))]
    expected = offline_scores(model, events, {"user-good": good})
    assert {k: p["score"] for k, p in predictions.items()} == expected
    assert runtime.processor is not None
    assert runtime.processor.stats.retries == 0
