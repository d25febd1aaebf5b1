"""Nothing lost: crash, stop, scale-in, outage, poison input and bad-deploy tests on the real
servers. Each ends in ``streamscore audit`` (streams.audit) and checks its counts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from settings import Settings
from streams.audit import AuditReport, audit
from streams.exit_codes import ExitCode
from streams.topics import ensure_topics, group_state
from tests.support.helpers import entity_documents, event_bytes, eventually
from tests.support.kafka_io import committed_lag, end_total, produce
from tests.support.names import Names, settings_for
from tests.support.private_servers import PrivateKafka, PrivateMongo, free_ports
from tests.support.scorer_process import ScorerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("STREAMSCORE_FAULT_EVENTS", "20000"))


async def seed(mongo_url: str, database: str, count: int = 100) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=5_000
    )
    try:
        await client[database]["entity_features"].insert_many(entity_documents(count))
    finally:
        await client.close()


async def produce_events(settings: Settings, count: int, prefix: str = "e") -> None:
    values = [event_bytes(i, f"user-{i % 120}", prefix) for i in range(count)]
    await produce(
        settings.kafka.bootstrap_servers, settings.kafka.input_topic, values, [None] * count
    )


async def produce_paced(
    settings: Settings, count: int, chunks: int = 40, pause_s: float = 0.2
) -> None:
    """Produce ``count`` events in ``chunks`` parts ``pause_s`` apart: a stream lasting several
    seconds however fast the scorer is, so a fault injected once a fifth of the outputs exist
    lands while events are still arriving."""
    values = [event_bytes(i, f"user-{i % 120}") for i in range(count)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        step = -(-count // chunks)
        for start in range(0, count, step):
            sent = [
                await producer.send(settings.kafka.input_topic, value)
                for value in values[start : start + step]
            ]
            await asyncio.gather(*sent)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def outputs(settings: Settings) -> int:
    kafka = settings.kafka
    return await end_total(kafka.bootstrap_servers, kafka.output_topic) + await end_total(
        kafka.bootstrap_servers, kafka.dlq_topic
    )


async def partly_done(settings: Settings, count: int, within_s: float = 120) -> bool:
    """Wait until about a fifth of ``count`` records have an output: mid-stream."""

    async def some() -> bool:
        return await outputs(settings) >= count // 5

    return await eventually(some, within_s)


async def drained(settings: Settings, expected: int, within_s: float = 180) -> bool:
    """Wait until ``expected`` records have an output (exactly-once: until every input record
    is committed, since the topics' ends also count transaction markers and aborted records)."""
    kafka = settings.kafka

    async def done() -> bool:
        if settings.stream.delivery == "exactly_once":
            lag = await committed_lag(kafka.bootstrap_servers, kafka.group_id, kafka.input_topic)
            return (
                sum(lag.values()) == 0
                and await end_total(kafka.bootstrap_servers, kafka.input_topic) >= expected
            )
        return await outputs(settings) >= expected

    return await eventually(done, within_s)


def check_delivery(report: AuditReport, settings: Settings) -> None:
    """Exactly-once: read with read_committed, nothing may repeat."""
    if settings.stream.delivery == "exactly_once":
        assert report.duplicated_predictions == 0, report.to_text()
        assert report.duplicated_dead_letters == 0, report.to_text()


def report_line(name: str, report: AuditReport) -> str:
    line = (
        f"[audit] {name}: events in {report.events_in}, predictions {report.predictions}, "
        f"duplicates {report.duplicated_predictions}, dead letters {report.dead_letters}, "
        f"lost {report.lost}"
    )
    print(line)
    return line


@pytest.fixture
def fault_settings(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, kafka_client: str
) -> Settings:
    """Every test that uses these runs once per Kafka client."""
    return settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": kafka_client},
        stream={"max_batch_size": 500, "shutdown_timeout_s": 20},
    )


async def interrupt_and_restart(
    settings: Settings, names: Names, tmp_path: Path, sigkill: bool
) -> AuditReport:
    """Score EVENTS, stop the scorer a fifth of the way (SIGKILL or SIGTERM), restart it, let
    it drain, and audit the topics."""
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    feeding = asyncio.create_task(produce_paced(settings, EVENTS))
    try:
        assert await partly_done(settings, EVENTS), scorer.log()[-3000:]
        assert not feeding.done(), "the stream ended before the fault: nothing would be proved"
        if sigkill:
            scorer.signal(signal.SIGKILL)
            scorer.wait()
        else:
            assert scorer.stop(timeout=40) == ExitCode.OK, scorer.log()[-3000:]
        await feeding
        assert await outputs(settings) < EVENTS, "stopped too late to prove anything"
        scorer = ScorerProcess(settings, tmp_path / "scorer2.log").start()
        assert await drained(settings, EVENTS), scorer.log()[-3000:]
        assert scorer.stop(timeout=40) == ExitCode.OK
    finally:
        feeding.cancel()
        scorer.kill()
        await seed_cleanup(settings)
    return await audit(settings)


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    report = await interrupt_and_restart(fault_settings, names, tmp_path, sigkill=True)
    report_line(f"kill -9 + restart ({fault_settings.kafka.client})", report)
    assert report.events_in == EVENTS
    assert report.lost == 0
    assert report.unexpected_predictions == 0
    # Only what was in flight may repeat: at most the two batches the pipeline holds.
    assert report.duplicated_predictions <= 2 * fault_settings.stream.max_batch_size


async def test_sigterm_mid_stream_then_restart_loses_and_repeats_nothing(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    report = await interrupt_and_restart(fault_settings, names, tmp_path, sigkill=False)
    report_line(f"SIGTERM + restart ({fault_settings.kafka.client})", report)
    assert report.events_in == EVENTS
    assert report.lost == 0
    assert report.duplicated_predictions == 0
    assert report.predictions == EVENTS


async def test_two_scorers_one_killed_the_survivor_takes_all_partitions(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    settings = fault_settings
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    a = ScorerProcess(settings, tmp_path / "a.log", STREAMSCORE_KAFKA__CLIENT_ID="a").start()
    b = ScorerProcess(settings, tmp_path / "b.log", STREAMSCORE_KAFKA__CLIENT_ID="b").start()
    try:

        async def two() -> bool:
            state, members = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and members == 2

        assert await eventually(two, 60), a.log()[-2000:] + b.log()[-2000:]
        feeding = asyncio.create_task(produce_paced(settings, EVENTS))
        assert await partly_done(settings, EVENTS)
        assert not feeding.done(), "the stream ended before the kill: nothing would be proved"
        b.signal(signal.SIGKILL)
        b.wait()
        await feeding

        async def one() -> bool:
            state, members = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and members == 1

        assert await eventually(one, 60), a.log()[-3000:]
        assert await drained(settings, EVENTS), a.log()[-3000:]

        async def all_committed() -> bool:
            # Outputs can reach EVENTS while the survivor still re-scores what the killed
            # scorer had sent but not committed (those repeat): wait for its commits.
            lag = await committed_lag(
                settings.kafka.bootstrap_servers, names.group_id, names.input_topic
            )
            return set(lag.values()) == {0}

        # the survivor owns and commits all 4 partitions
        assert await eventually(all_committed, 60), a.log()[-3000:]
        a.stop()
    finally:
        a.kill()
        b.kill()
        await seed_cleanup(settings)
    report = await audit(settings)
    report_line(f"two scorers, one killed ({settings.kafka.client})", report)
    assert report.lost == 0
    assert report.events_in == EVENTS
    assert report.unexpected_predictions == 0


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_mongodb_down_for_15s_nothing_dead_lettered_nothing_lost(
    kafka_bootstrap: str,
    private_mongo: PrivateMongo,
    names: Names,
    model_path: Path,
    tmp_path: Path,
    delivery: str,
) -> None:
    (port,) = free_ports(1)
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=private_mongo.url,
        mongo={"server_selection_timeout_ms": 500, "operation_timeout_ms": 1_000},
        scoring={"cache_ttl_s": 0.5},
        stream={
            "max_batch_size": 200,
            "retry_max_backoff_s": 2.0,
            "delivery": delivery,
            "metrics_port": port,
        },
    )
    await seed(private_mongo.url, names.database)
    await ensure_topics(settings.kafka)
    count = EVENTS // 2
    half = count // 2
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    try:
        await produce_events(settings, half)
        assert await drained(settings, half), scorer.log()[-3000:]
        private_mongo.stop()
        before = await outputs(settings)
        values = [event_bytes(i, f"user-{i % 120}", "late") for i in range(count - half)]
        await produce(kafka_bootstrap, names.input_topic, values, [None] * len(values))
        await asyncio.sleep(15)
        during = await outputs(settings)
        # Entities still cached (TTL 0.5 s) may be scored at the very start; then it waits
        # (exactly-once also writes a transaction marker per output partition and batch).
        assert during - before <= settings.stream.max_batch_size * 2 + 16
        assert await end_total(kafka_bootstrap, names.dlq_topic) == 0
        # The lag gauge shows what waits, as the group's committed offsets say (nothing
        # commits while MongoDB is down), though this process committed nothing meanwhile.
        waiting = await committed_lag(kafka_bootstrap, settings.kafka.group_id, names.input_topic)
        assert sum(waiting.values()) > 0
        assert await eventually(lambda: _lag_gauge(port, names.input_topic, waiting), 15)
        private_mongo.start()
        assert await drained(settings, count), scorer.log()[-3000:]
        assert scorer.alive()
        scorer.stop()
    finally:
        scorer.kill()
    log = scorer.log()
    assert "scoring failed, will retry" in log
    report = await audit(settings)
    report_line(f"MongoDB down 15 s ({delivery})", report)
    check_delivery(report, settings)
    assert report.dead_letters == 0
    assert report.lost == 0
    assert report.events_in == count


@pytest.mark.parametrize(
    ("client", "delivery"),
    [
        ("aiokafka", "at_least_once"),
        ("aiokafka", "exactly_once"),
        ("confluent", "at_least_once"),
        ("confluent", "exactly_once"),
    ],
)
async def test_kafka_broker_restart_mid_stream_loses_nothing(
    private_kafka: PrivateKafka,
    mongo_url: str,
    names: Names,
    model_path: Path,
    tmp_path: Path,
    client: str,
    delivery: str,
) -> None:
    settings = settings_for(
        names,
        model_path,
        bootstrap=private_kafka.bootstrap,
        mongo_url=mongo_url,
        kafka={"client": client},
        stream={"max_batch_size": 200, "delivery": delivery},
    )
    await seed(mongo_url, names.database)
    await ensure_topics(settings.kafka)
    count = EVENTS // 2
    await produce_events(settings, count)
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    try:
        assert await partly_done(settings, count), scorer.log()[-3000:]
        private_kafka.restart()
        assert await drained(settings, count, within_s=240), scorer.log()[-3000:]
        assert scorer.alive()
        scorer.stop()
    finally:
        scorer.kill()
        await seed_cleanup(settings)
    report = await audit(settings)
    report_line(f"Kafka broker restart ({client}, {delivery})", report)
    check_delivery(report, settings)
    assert report.lost == 0
    assert report.events_in == count


POISON: list[tuple[bytes | None, str]] = [
    (b"not json", "invalid_json"),
    (b"\xff\xfe\xfd", "invalid_encoding"),
    (b"", "empty_value"),
    (None, "empty_value"),
    (b'{"event_id": 5, "entity_id": "u"}', "invalid_event"),
    (b'{"event_id": "p-nan", "entity_id": "u", "features": {"amount": NaN}}', "invalid_event"),
    (
        b'{"event_id": "p-inf", "entity_id": "u", "features": {"amount": -Infinity}}',
        "invalid_event",
    ),
    (b'{"event_id": "p-op", "entity_id": {"$gt": ""}}', "invalid_event"),
    (b'{"event_id": "p-long", "entity_id": "' + b"u" * 500 + b'"}', "invalid_event"),
    (b'{"event_id": "p-huge", "entity_id": "u", "features": {"amount": 1e999}}', "invalid_event"),
    (
        b'{"event_id": "p-bigint", "entity_id": "u", "features": {"a": ' + b"9" * 400 + b"}}",
        "invalid_event",
    ),
    (b"[1, 2, 3]", "invalid_event"),
    (b"null", "invalid_event"),
    (b'"just a string"', "invalid_event"),
    (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    (b'{"event_id": "p-big", "entity_id": "u", "pad": "' + b"x" * 300_000 + b'"}', "too_large"),
]


async def test_every_kind_of_bad_input_is_dead_lettered_and_good_ones_scored(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    settings = fault_settings.model_copy(
        update={"stream": fault_settings.stream.model_copy(update={"max_record_bytes": 200_000})}
    )
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    values: list[bytes | None] = []
    for i in range(2_000):
        values.append(event_bytes(i, f"user-{i % 120}"))
        if i % 100 == 0:
            values.append(POISON[(i // 100) % len(POISON)][0])
    tolerant = json.dumps(
        {"event_id": "tolerant", "entity_id": "user-1", "new_field": [1], "features": {"x9": 1}}
    ).encode()
    values.append(tolerant)
    for value, _kind in POISON:
        values.append(value)
    keys = [b"tombstone" if v is None else None for v in values]  # aiokafka needs one of them
    await produce(settings.kafka.bootstrap_servers, names.input_topic, values, keys)
    bad = sum(1 for v in values if v is not None and v in {p for p, _ in POISON if p is not None})
    bad += sum(1 for v in values if v is None)
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    try:
        assert await drained(settings, len(values)), scorer.log()[-3000:]
        assert scorer.alive()
        scorer.stop()
    finally:
        scorer.kill()
        await seed_cleanup(settings)
    report = await audit(settings)
    report_line(f"poison input ({settings.kafka.client})", report)
    assert report.lost == 0
    assert report.predictions == 2_001  # including the tolerant event
    assert report.dead_letters == bad
    assert report.invalid_records == bad


async def test_a_bad_deploy_halts_instead_of_emptying_the_topic_into_the_dlq(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    settings = fault_settings
    await ensure_topics(settings.kafka)
    good = [event_bytes(i, "user-1") for i in range(300)]
    broken = [b'{"eventId": "camelCase now", "entityId": "user-1"}'] * 3_000
    await produce(
        settings.kafka.bootstrap_servers, names.input_topic, good + broken, [None] * 3_300
    )
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    try:
        code = scorer.wait(timeout=120)
    finally:
        scorer.kill()
    assert code == ExitCode.DEAD_LETTER_FLOOD, scorer.log()[-3000:]
    assert "looks like a bad producer deploy" in scorer.log()
    dead = await end_total(settings.kafka.bootstrap_servers, names.dlq_topic)
    assert dead < settings.stream.dead_letter_window  # stopped early, not 3,000
    lag = await committed_lag(settings.kafka.bootstrap_servers, names.group_id, names.input_topic)
    assert sum(lag.values()) >= 3_000 - dead  # the rest waits, uncommitted, for the fix
    report = await audit(settings)
    report_line(f"bad deploy ({settings.kafka.client})", report)


async def test_a_missing_dead_letter_topic_holds_the_scorer_until_it_exists(
    fault_settings: Settings, names: Names, tmp_path: Path
) -> None:
    """With topic creation off, a scorer whose dead-letter topic is missing reads nothing
    (nothing could be answered for a bad record) and says what it waits for; once the topic
    exists, every record gets its output and is committed."""
    settings = fault_settings.model_copy(
        update={
            "kafka": fault_settings.kafka.model_copy(
                update={
                    "create_topics": False,
                    "request_timeout_ms": 3_000,
                    "delivery_timeout_s": 5,
                }
            )
        }
    )
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka, [names.input_topic, names.output_topic])
    values = [event_bytes(i, "user-1") for i in range(100)] + [b"not json"] * 2
    await produce(settings.kafka.bootstrap_servers, names.input_topic, values, [None] * 102)
    scorer = ScorerProcess(settings, tmp_path / "scorer.log").start()
    try:
        assert scorer.wait_for_log('"topics_missing"', timeout=90), scorer.log()[-3000:]
        assert names.dlq_topic in scorer.log()
        await asyncio.sleep(3)
        lag = await committed_lag(
            settings.kafka.bootstrap_servers, names.group_id, names.input_topic
        )
        assert sum(lag.values()) == 102  # nothing read, nothing committed
        assert await end_total(settings.kafka.bootstrap_servers, names.output_topic) == 0
        await ensure_topics(settings.kafka, [names.dlq_topic])

        async def all_committed() -> bool:
            lag = await committed_lag(
                settings.kafka.bootstrap_servers, names.group_id, names.input_topic
            )
            return sum(lag.values()) == 0

        assert await eventually(all_committed, 90), scorer.log()[-3000:]
        scorer.stop()
    finally:
        scorer.kill()
        await seed_cleanup(settings)
    report = await audit(settings)
    report_line(f"dead-letter topic missing ({settings.kafka.client})", report)
    assert report.lost == 0
    assert report.dead_letters >= 2


async def seed_cleanup(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo.url.get_secret_value(), serverSelectionTimeoutMS=2_000
    )
    try:
        await client.drop_database(settings.mongo.database)
    finally:
        await client.close()


async def _lag_gauge(port: int, topic: str, expected: dict[int, int]) -> bool:
    """Whether the scorer's streamscore_consumer_lag is ``expected`` on every partition."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    shown = {
        int(line.split('partition="')[1].split('"')[0]): float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("streamscore_consumer_lag{") and f'topic="{topic}"' in line
    }
    return shown == {p: float(n) for p, n in expected.items()}
