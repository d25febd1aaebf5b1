"""Exactly-once delivery on the real broker: every test ends in the audit read with
``read_committed`` and finds nothing lost and nothing repeated."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from settings import Settings
from streams.app import build_app
from streams.audit import AuditReport, audit
from streams.exit_codes import ExitCode
from streams.topics import ensure_topics, group_state
from streams.transactions import PartitionProducers
from tests.integration.test_faults import produce_events, report_line, seed
from tests.support.helpers import eventually
from tests.support.kafka_io import committed_lag, end_total, produce
from tests.support.names import Names, settings_for
from tests.support.private_servers import PrivateMongo
from tests.support.scorer_process import ScorerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 20_000


def _eos(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, client: str
) -> Settings:
    return settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"client": client},
        stream={"max_batch_size": 500, "shutdown_timeout_s": 20, "delivery": "exactly_once"},
    )


@pytest.fixture
def eos_settings(kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path) -> Settings:
    """Exactly-once on aiokafka (one transactional producer per input partition)."""
    return _eos(kafka_bootstrap, mongo_url, names, model_path, "aiokafka")


@pytest.fixture(params=["aiokafka", "confluent"])
def eos_any_client(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
) -> Settings:
    """Exactly-once on each client (librdkafka: one producer per process, KIP-447 fencing)."""
    return _eos(kafka_bootstrap, mongo_url, names, model_path, request.param)


async def uncommitted(settings: Settings) -> int:
    """Input records not yet committed by the group."""
    kafka = settings.kafka
    lag = await committed_lag(kafka.bootstrap_servers, kafka.group_id, kafka.input_topic)
    return sum(lag.values())


async def all_committed(settings: Settings, within_s: float = 180) -> bool:
    async def done() -> bool:
        return await uncommitted(settings) == 0

    return await eventually(done, within_s)


async def some_committed_of(settings: Settings, records: int, within_s: float = 120) -> bool:
    """Wait until ``records`` input records are committed."""
    kafka = settings.kafka

    async def some() -> bool:
        produced = await end_total(kafka.bootstrap_servers, kafka.input_topic)
        return produced - await uncommitted(settings) >= records

    return await eventually(some, within_s, every_s=0.05)


async def some_committed(settings: Settings, within_s: float = 120) -> bool:
    """Wait until a fifth of EVENTS input records are committed: mid-stream."""
    kafka = settings.kafka

    async def some() -> bool:
        produced = await end_total(kafka.bootstrap_servers, kafka.input_topic)
        return produced - await uncommitted(settings) >= EVENTS // 5

    return await eventually(some, within_s, every_s=0.05)


def exactly_once(report: AuditReport, events: int) -> None:
    assert report.events_in == events
    assert report.lost == 0, report.to_text()
    assert report.duplicated_predictions == 0, report.to_text()
    assert report.duplicated_dead_letters == 0, report.to_text()
    assert report.unexpected_predictions == 0, report.to_text()
    assert report.predictions + report.dead_letters == events


async def forty_events_one_poison(settings: Settings) -> None:
    """Seed the entities; produce 40 events, the 8th of them not JSON."""
    await seed(settings.mongo.url.get_secret_value(), settings.mongo.database)
    await ensure_topics(settings.kafka)
    values = [
        json.dumps({"event_id": f"e{i}", "entity_id": f"user-{i}"}).encode() for i in range(40)
    ]
    values[7] = b"poison: not json"
    await produce(settings.kafka.bootstrap_servers, settings.kafka.input_topic, values, [None] * 40)


async def once_committed_repeated_uncommitted(settings: Settings) -> None:
    """After a failed transaction: read_committed sees every output of the 40 once (one dead
    letter); read_uncommitted also sees the aborted attempt's."""
    committed = await audit(settings, "read_committed")
    exactly_once(committed, 40)
    assert committed.dead_letters == 1
    uncommitted = await audit(settings, "read_uncommitted")
    assert uncommitted.duplicated_predictions + uncommitted.duplicated_dead_letters > 0


async def test_each_partition_of_a_batch_commits_in_one_transaction_with_its_dead_letters(
    eos_settings: Settings, mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that fails to commit is aborted and retried: a ``read_uncommitted``
    reader sees the aborted outputs, a ``read_committed`` one never does."""
    from aiokafka import AIOKafkaProducer

    settings = eos_settings
    await forty_events_one_poison(settings)

    original = AIOKafkaProducer.commit_transaction
    failures = {"left": 1}

    async def fail_once(self: AIOKafkaProducer) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("simulated failure before the commit")
        await original(self)

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", fail_once)
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        assert await all_committed(settings, 60)
    finally:
        await app.stop()
    assert failures["left"] == 0
    await once_committed_repeated_uncommitted(settings)
    assert runtime.exit_code == ExitCode.OK


def _wrap_producers(
    monkeypatch: pytest.MonkeyPatch, ids: list[str], **calls: Callable[..., Any]
) -> None:
    """The scorer's transactional producers are real ones whose ``calls`` are replaced (each
    is given the real producer first); ``ids`` collects their transactional ids."""
    from confluent_kafka import Producer

    import streams.librdkafka_transactions as librdkafka_transactions

    class Wrapped:
        def __init__(self, config: dict[str, Any]) -> None:
            ids.append(config["transactional.id"])
            self._producer = Producer(config)

        def __getattr__(self, name: str) -> Any:
            if name in calls:
                return functools.partial(calls[name], self._producer)
            return getattr(self._producer, name)

    monkeypatch.setattr(librdkafka_transactions, "Producer", Wrapped)


async def _run_until_all_committed(
    settings: Settings, finally_: Callable[[], object] | None = None
) -> Any:
    """Run the scorer in this process until every input record is committed; its runtime."""
    app, _, runtime = build_app(settings)
    await app.start()
    try:
        assert await all_committed(settings, 90)
    finally:
        if finally_ is not None:
            finally_()
        await app.stop()
    return runtime


async def test_librdkafka_aborts_a_failed_transaction_and_replaces_a_fatal_producer(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    mongo_db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On librdkafka, one commit fails with an ordinary error (aborted, the batch read
    again) and one with a fatal error (a new producer, with the process's own transactional
    id): a ``read_committed`` reader sees every output once."""
    from confluent_kafka import KafkaError as LibrdkafkaError
    from confluent_kafka import KafkaException, Producer

    import streams.librdkafka_transactions as librdkafka_transactions
    from streams.librdkafka_transactions import transactional_id

    settings = _eos(kafka_bootstrap, mongo_url, names, model_path, "confluent")
    await forty_events_one_poison(settings)
    failures: list[BaseException] = [
        RuntimeError("simulated failure before the commit"),
        KafkaException(
            LibrdkafkaError(LibrdkafkaError._INCONSISTENT, "simulated fatal error", fatal=True)
        ),
    ]
    ids: list[str] = []

    def commit_transaction(producer: Producer, *args: Any) -> None:
        if failures:
            raise failures.pop(0)
        producer.commit_transaction(*args)

    _wrap_producers(monkeypatch, ids, commit_transaction=commit_transaction)
    runtime = await _run_until_all_committed(settings)
    assert isinstance(runtime.delivery, librdkafka_transactions.LibrdkafkaTransactionalDelivery)
    assert failures == []
    assert len(ids) == 2  # the fatal error replaced the producer, with the same id
    assert ids[0] == ids[1] == transactional_id(settings)
    assert ids[0].startswith(f"streamscore-{settings.kafka.group_id}-")
    assert ids[0].endswith(f"-{settings.kafka.client_id}")
    await once_committed_repeated_uncommitted(settings)
    assert runtime.exit_code == ExitCode.OK


async def test_a_librdkafka_call_that_hangs_past_its_timeout_is_given_up_and_replaced(
    kafka_bootstrap: str,
    mongo_url: str,
    names: Names,
    model_path: Path,
    mongo_db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka can block in send_offsets_to_transaction past its timeout after a broker
    restart (its issues 5456, 5511): the call is given up after the timeout and a grace, a
    new producer with the same id fences the hung one, and every output is seen once."""
    import threading

    from confluent_kafka import Producer

    import streams.librdkafka_transactions as librdkafka_transactions

    settings = _eos(kafka_bootstrap, mongo_url, names, model_path, "confluent")
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"transaction_timeout_ms": 3_000})}
    )
    monkeypatch.setattr(librdkafka_transactions, "_HANG_GRACE_S", 1.0)
    await forty_events_one_poison(settings)
    release = threading.Event()
    hung: list[str] = []
    ids: list[str] = []

    def send_offsets_to_transaction(producer: Producer, *args: Any) -> None:
        if not hung:
            hung.append("now")
            release.wait(120)  # as librdkafka's call that never returns
        producer.send_offsets_to_transaction(*args)

    _wrap_producers(monkeypatch, ids, send_offsets_to_transaction=send_offsets_to_transaction)
    runtime = await _run_until_all_committed(settings, finally_=release.set)
    assert hung == ["now"]
    assert len(ids) == 2  # replaced,
    assert ids[0] == ids[1]  # with the same transactional id
    await once_committed_repeated_uncommitted(settings)
    assert runtime.exit_code == ExitCode.OK


async def test_a_second_librdkafka_scorer_with_the_same_transactional_id_halts_the_first(
    kafka_bootstrap: str, mongo_url: str, names: Names, model_path: Path, tmp_path: Path
) -> None:
    """Two live processes with one client id on one host share a transactional id: the one
    fenced stops with exit code 2 and says why, instead of fencing the other back."""
    settings = _eos(kafka_bootstrap, mongo_url, names, model_path, "confluent")
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    first = ScorerProcess(settings, tmp_path / "first.log").start()
    second = ScorerProcess(settings, tmp_path / "second.log")
    try:
        await produce_events(settings, 2_000)
        assert await some_committed_of(settings, 500), first.log()[-3000:]
        second.start()
        await asyncio.sleep(5)  # the second one's producer starts, fencing the first's
        await produce_events(settings, 2_000, prefix="more-")
        assert first.wait(timeout=60) == ExitCode.CONFIGURATION, first.log()[-3000:]
        assert "another producer with transactional id" in first.log()
        assert await all_committed(settings), second.log()[-3000:]
        assert second.stop(timeout=40) == ExitCode.OK, second.log()[-3000:]
    finally:
        first.kill()
        second.kill()
    report = await audit(settings, "read_committed")
    exactly_once(report, 4_000)


def test_transactional_ids_are_per_input_partition(eos_settings: Settings) -> None:
    from aiokafka.structs import TopicPartition

    producers = PartitionProducers(eos_settings)
    topic = eos_settings.kafka.input_topic
    ids = {producers.transactional_id(TopicPartition(topic, p)) for p in range(4)}
    assert len(ids) == 4
    assert all(i.startswith(f"streamscore-{eos_settings.kafka.group_id}-{topic}-") for i in ids)


async def _read(settings: Settings, isolation: str, expected: int) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        kafka.output_topic,
        kafka.dlq_topic,
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(60):  # until expected arrived, then one more empty read
            got = [r for b in (await consumer.getmany(timeout_ms=500)).values() for r in b]
            records += got
            if len(records) >= expected and not got:
                break
    finally:
        await consumer.stop()
    return records


async def test_a_transaction_sends_record_batches_committed_whole_or_aborted_whole(
    eos_settings: Settings,
) -> None:
    """Predictions go out as record batches inside the partition's transaction: a committed
    transaction shows every output once, in order per key; an aborted one shows none of its
    outputs to a read_committed reader (a read_uncommitted one sees them)."""
    from aiokafka.structs import TopicPartition

    kafka = eos_settings.kafka
    await ensure_topics(kafka)
    tp = TopicPartition(kafka.input_topic, 0)
    producers = PartitionProducers(eos_settings)
    await producers.start([tp])
    producer, sender = producers.get(tp), producers.outputs(tp)
    assert producer is not None
    assert sender is not None

    def outputs(tag: str, count: int) -> list[Any]:
        made: list[Any] = [
            (kafka.output_topic, f'{{"{tag}":{i}}}'.encode(), f"user-{i % 31}".encode(), None)
            for i in range(count)
        ]
        made.insert(count // 2, (kafka.dlq_topic, f"dead {tag}".encode(), b"k", [("h", None)]))
        return made

    try:
        committed = outputs("c", 2_000)
        await producer.begin_transaction()
        handed = await sender.send_many(committed, range(len(committed)))
        await asyncio.gather(*(future for future, _ in handed))
        await producer.commit_transaction()
        assert len(handed) < len(committed) // 20  # record batches, not a send per record
        assert sorted(i for _, covered in handed for i in covered) == list(range(len(committed)))

        aborted = outputs("a", 700)
        await producer.begin_transaction()
        handed = await sender.send_many(aborted, range(len(aborted)))
        await asyncio.gather(*(future for future, _ in handed))
        await producer.abort_transaction()
    finally:
        await producers.stop_all()

    seen = await _read(eos_settings, "read_committed", len(committed))
    assert sorted((r.topic, r.key, r.value) for r in seen) == sorted(
        (t, k, v) for t, v, k, _ in committed
    )
    by_key: dict[bytes, list[int]] = {}
    for r in sorted(seen, key=lambda r: (r.partition, r.offset)):
        if r.topic == kafka.output_topic:
            by_key.setdefault(r.key, []).append(json.loads(r.value)["c"])
    assert all(values == sorted(values) for values in by_key.values())  # order kept per key
    everything = await _read(eos_settings, "read_uncommitted", len(committed) + len(aborted))
    assert len(everything) == len(committed) + len(aborted)


@pytest.mark.parametrize("sigkill", [True, False], ids=["kill -9", "SIGTERM"])
async def test_stopped_mid_stream_then_restarted_nothing_lost_nothing_repeated(
    eos_any_client: Settings, names: Names, tmp_path: Path, sigkill: bool
) -> None:
    settings = eos_any_client
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    await produce_events(settings, EVENTS)
    scorer = ScorerProcess(settings, tmp_path / "a.log").start()
    try:
        assert await some_committed(settings), scorer.log()[-3000:]
        if sigkill:
            scorer.signal(signal.SIGKILL)
            scorer.wait()
        else:
            assert scorer.stop(timeout=40) == ExitCode.OK, scorer.log()[-3000:]
        scorer = ScorerProcess(settings, tmp_path / "b.log").start()
        assert await all_committed(settings), scorer.log()[-3000:]
        assert scorer.stop(timeout=40) == ExitCode.OK, scorer.log()[-4000:]
    finally:
        scorer.kill()
    report = await audit(settings, "read_committed")
    report_line(f"exactly-once, {'kill -9' if sigkill else 'SIGTERM'} + restart", report)
    exactly_once(report, EVENTS)


async def test_a_third_scorer_joins_and_one_is_killed_nothing_lost_nothing_repeated(
    eos_any_client: Settings, names: Names, tmp_path: Path
) -> None:
    """Rebalances while transactions are open: a scorer joins mid-stream (partitions move
    away from the running ones), then one is killed (its partitions move again)."""
    settings = eos_any_client
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    a = ScorerProcess(settings, tmp_path / "a.log", STREAMSCORE_KAFKA__CLIENT_ID="a")
    b = ScorerProcess(settings, tmp_path / "b.log", STREAMSCORE_KAFKA__CLIENT_ID="b")
    c = ScorerProcess(settings, tmp_path / "c.log", STREAMSCORE_KAFKA__CLIENT_ID="c")
    a.start()
    b.start()

    killed = asyncio.Event()
    chunks = 0

    async def steady_stream() -> None:
        """Chunks every 0.5 s (transactions open throughout) until 4 chunks after the kill,
        however long the join takes: at least 20 chunks, at most 200."""
        nonlocal chunks
        after_kill = 0
        while chunks < 200 and (chunks < 20 or after_kill < 4):
            await produce_events(settings, EVENTS // 20, prefix=f"c{chunks}-")
            chunks += 1
            after_kill += killed.is_set()
            await asyncio.sleep(0.5)

    producing = asyncio.create_task(steady_stream())
    try:
        assert await some_committed(settings), a.log()[-2000:] + b.log()[-2000:]
        c.start()

        async def three() -> bool:
            state, members = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and members == 3

        assert await eventually(three, 60), c.log()[-2000:]
        assert not producing.done(), "the stream ended before the rebalance: nothing proven"
        b.signal(signal.SIGKILL)
        b.wait()
        killed.set()
        await producing
        assert await all_committed(settings), a.log()[-2000:] + c.log()[-2000:]
        assert a.stop(timeout=40) == ExitCode.OK
        assert c.stop(timeout=40) == ExitCode.OK
    finally:
        producing.cancel()
        for scorer in (a, b, c):
            scorer.kill()
    report = await audit(settings, "read_committed")
    report_line("exactly-once, join + kill -9", report)
    exactly_once(report, chunks * (EVENTS // 20))
    lag = await committed_lag(settings.kafka.bootstrap_servers, names.group_id, names.input_topic)
    assert set(lag.values()) == {0}


async def test_workers_in_one_process_group_one_killed_nothing_lost_nothing_repeated(
    eos_settings: Settings, names: Names, tmp_path: Path
) -> None:
    """``streamscore run --workers 2`` under exactly-once: a worker is killed while the stream
    flows; the supervisor restarts it and the group rebalances twice."""
    settings = eos_settings
    await seed(settings.mongo.url.get_secret_value(), names.database)
    await ensure_topics(settings.kafka)
    scorer = ScorerProcess(settings, tmp_path / "workers.log", workers=2).start()

    async def steady_stream() -> None:
        for chunk in range(20):
            await produce_events(settings, EVENTS // 20, prefix=f"w{chunk}-")
            await asyncio.sleep(0.5)

    try:

        async def two() -> bool:
            state, members = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and members == 2

        assert await eventually(two, 60), scorer.log()[-3000:]
        producing = asyncio.create_task(steady_stream())
        assert await some_committed(settings), scorer.log()[-3000:]
        first, _ = scorer.children()
        os.kill(first, signal.SIGKILL)
        assert not producing.done(), "the stream ended before the kill: nothing proven"
        await producing
        assert await all_committed(settings), scorer.log()[-3000:]
        assert scorer.stop(timeout=60) == 0, scorer.log()[-3000:]
    finally:
        scorer.kill()
    report = await audit(settings, "read_committed")
    report_line("exactly-once, --workers 2, one killed", report)
    exactly_once(report, EVENTS)


async def test_a_rebalance_while_mongodb_is_away_repeats_nothing(
    kafka_bootstrap: str,
    mongo_url: str,
    private_mongo: PrivateMongo,
    names: Names,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """Scorer A's MongoDB goes away while it scores a batch; B joins (A keeps some of its
    partitions, whose committed offsets it reads afresh), then leaves. The batch A fetched
    before those rebalances must not be committed: it would repeat what A reads again.

    aiokafka only: it rebalances in the background while a batch waits. librdkafka takes part
    in a rebalance only when it polls, between batches, so there the join waits for MongoDB
    (up to ``max_poll_interval_ms``) and no batch can straddle it."""
    client = "aiokafka"
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=private_mongo.url,
        kafka={"client": client},
        mongo={"server_selection_timeout_ms": 500, "operation_timeout_ms": 1_000},
        scoring={"cache_enabled": False},
        stream={"max_batch_size": 200, "retry_max_backoff_s": 1.0, "delivery": "exactly_once"},
    )
    other = settings.model_copy(
        update={"mongo": settings.mongo.model_copy(update={"url": mongo_url})}
    )
    for url in (private_mongo.url, mongo_url):
        await seed(url, names.database)
    await ensure_topics(settings.kafka)
    count = 4_000
    a = ScorerProcess(settings, tmp_path / "a.log", STREAMSCORE_KAFKA__CLIENT_ID="a").start()
    b = ScorerProcess(other, tmp_path / "b.log", STREAMSCORE_KAFKA__CLIENT_ID="b")
    try:
        await produce_events(settings, count // 2, prefix="before-")
        assert await some_committed_of(settings, 200), a.log()[-3000:]
        private_mongo.stop()
        await produce_events(settings, count // 2, prefix="during-")
        await asyncio.sleep(3)  # A holds a batch it cannot enrich
        b.start()

        async def members(n: int) -> bool:
            state, joined = await group_state(settings.kafka, names.group_id)
            return state == "Stable" and joined == n

        assert await eventually(lambda: members(2), 60), b.log()[-3000:]
        await asyncio.sleep(3)
        assert b.stop(timeout=40) == ExitCode.OK, b.log()[-3000:]
        assert await eventually(lambda: members(1), 60), a.log()[-3000:]
        private_mongo.start()
        assert await all_committed(settings), a.log()[-3000:]
        assert a.stop(timeout=40) == ExitCode.OK, a.log()[-3000:]
    finally:
        for scorer in (a, b):
            scorer.kill()
    report = await audit(settings, "read_committed")
    report_line(f"exactly-once ({client}), rebalance while MongoDB is away", report)
    exactly_once(report, count)


class _NoGroup:
    """What the delivery asks of the consumer before a transaction's offsets: never reached
    here (the outputs fail first), and a committed offset nobody has."""

    consumer = None

    def __init__(self) -> None:
        self.consumer = self

    def consumer_group_metadata(self) -> None:
        return None

    def committed(self, _partitions: Any, _timeout: float | None = None) -> list[Any]:
        return []


async def test_a_permanent_refusal_is_the_cause_not_the_records_librdkafka_purged_for_it(
    kafka_bootstrap: str, names: Names, model_path: Path
) -> None:
    """One prediction larger than its topic allows, in a transaction with 511 dead letters:
    librdkafka purges the others once it fails. The purged records are retriable; the
    refusal is not, and it is what the batch's fate is decided on (before, the first group's
    purge was taken as the cause, so the batch was retried for ever instead of at most
    max_batch_attempts times)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import MessageSizeTooLargeError
    from aiokafka.structs import TopicPartition

    from streams.delivery_types import Batch
    from streams.librdkafka_transactions import LibrdkafkaTransactionalDelivery
    from streams.transactions import TransactionAborted

    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        kafka={"client": "confluent", "transaction_timeout_ms": 20_000},
        stream={"delivery": "exactly_once"},
    )
    kafka = settings.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        small = NewTopic(kafka.output_topic, 1, 1, topic_configs={"max.message.bytes": "3000"})
        await admin.create_topics([small, NewTopic(kafka.dlq_topic, 1, 1)])
    finally:
        await admin.close()
    delivery = LibrdkafkaTransactionalDelivery(settings, asyncio.Event())
    await delivery.open()
    delivery.consumer = _NoGroup()
    source = TopicPartition(kafka.input_topic, 0)
    headers = [("streamscore.error.kind", b"invalid_json")]
    outputs: list[Any] = [(kafka.dlq_topic, b"d" * 20_000, None, headers)] * 511
    outputs.append((kafka.output_topic, b"p" * 3_500, b"k", None))
    batch = Batch(outputs, [source] * len(outputs), {source: 0}, {source: len(outputs)})
    try:
        with pytest.raises(TransactionAborted) as aborted:
            await delivery.deliver(batch, commit=None)  # type: ignore[arg-type]
    finally:
        await delivery.close()
    assert isinstance(aborted.value.cause, MessageSizeTooLargeError), repr(aborted.value.cause)
    assert not aborted.value.retriable
