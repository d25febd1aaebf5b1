"""The librdkafka consumer hands out only readable records, rewinds a partition librdkafka
could not read, halts naming it after the attempts, and commits exactly the offsets given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaError as AiokafkaError
from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as LibrdkafkaPartition
from faststream.confluent.helpers.config import ConfluentFastConfig

from streams.fetch_guard import FetchGuard
from streams.librdkafka_consumer import GuardedConfluentConsumer
from streams.librdkafka_records import LibrdkafkaRecord


class ScriptedClient:
    """Stands in for ``confluent_kafka.Consumer``: each ``consume`` returns the next poll."""

    def __init__(self, polls: Sequence[list[Message]]) -> None:
        self.polls = list(polls)
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.commit_error: KafkaError | None = None

    def poll(self, _timeout: float) -> Message | None:
        if not self.polls:
            return None
        if not self.polls[0]:
            self.polls.pop(0)
            return None
        return self.polls[0].pop(0)

    def consume(self, num: int, timeout: float) -> list[Message]:
        """The rest of the current poll (the scorer drains without waiting)."""
        assert timeout == 0
        rest = self.polls.pop(0) if self.polls else []
        assert len(rest) <= num
        return rest

    def seek(self, tp: LibrdkafkaPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, *, offsets: list[LibrdkafkaPartition], asynchronous: bool) -> Any:
        assert asynchronous is False
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)
        self.commits.append([(p.topic, p.partition, p.offset) for p in offsets])
        return offsets

    def close(self) -> None:
        return


def record(partition: int, offset: int) -> Message:
    return Message(topic="t", partition=partition, offset=offset, value=b"{}", timestamp=(1, 5))


def broken(partition: int, offset: int, code: int = KafkaError._BAD_MSG) -> Message:
    return Message(topic="t", partition=partition, offset=offset, error=KafkaError(code))


def client_error() -> Message:
    return Message(topic=None, partition=-1, offset=-1, error=KafkaError(KafkaError._TRANSPORT))


@pytest.fixture
def halts() -> list[str]:
    return []


def consumer_with(
    polls: Sequence[list[Message]], halts: list[str], refusals: list[str] | None = None
) -> GuardedConfluentConsumer:
    guard = FetchGuard(
        max_attempts=3,
        initial_backoff_s=0.001,
        max_backoff_s=0.001,
        on_unreadable=halts.append,
        on_refused=None if refusals is None else refusals.append,
    )
    consumer = GuardedConfluentConsumer(
        "t",
        guard=guard,
        config=ConfluentFastConfig(bootstrap_servers="127.0.0.1:1"),
        admin_service=None,
        logger=None,
        partitions=[],
        group_id="g",
    )
    consumer.consumer = ScriptedClient(polls)  # type: ignore[assignment]
    consumer._on_assign(None, [LibrdkafkaPartition("t", 0), LibrdkafkaPartition("t", 1)])
    return consumer


def offsets(messages: Sequence[Message]) -> list[tuple[int | None, int | None]]:
    return [(m.partition(), m.offset()) for m in messages]


async def test_readable_records_pass_and_client_errors_are_only_counted(halts: list[str]) -> None:
    consumer = consumer_with(
        [[record(0, 0), client_error(), broken(0, 1, KafkaError._PARTITION_EOF), record(1, 4)]],
        halts,
    )
    got = await consumer.getmany(timeout=0.01, max_records=10)
    assert offsets(got) == [(0, 0), (1, 4)]
    assert consumer.guard.failures == 1
    assert consumer.consumer.seeks == []  # type: ignore[attr-defined]
    assert halts == []


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.INVALID_SESSION_TIMEOUT,
        KafkaError.INVALID_GROUP_ID,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    ],
)
async def test_a_setting_the_broker_refuses_halts_once_and_hands_out_nothing_more(
    halts: list[str], code: int
) -> None:
    """librdkafka reports a refused JoinGroup as an error of the poll and retries it forever;
    the guard calls ``on_refused`` once (the scorer exits 2), never ``on_unreadable``."""
    refused = Message(topic=None, partition=0, offset=-1001, error=KafkaError(code))
    refusals: list[str] = []
    consumer = consumer_with([[record(0, 0), refused, client_error()], [refused]], halts, refusals)

    got = await consumer.getmany(timeout=0.01, max_records=10)
    assert offsets(got) == [(0, 0)]  # what was read before it is still handed out
    assert len(refusals) == 1
    assert refusals[0].startswith(f"Kafka refused a setting: {KafkaError(code).name()}")
    assert consumer.guard.halted == refusals[0]
    assert halts == []
    assert consumer.guard.failures == 1  # the transport error only
    assert await consumer.getmany(timeout=0.01, max_records=10) == ()
    assert len(consumer.consumer.polls) == 1  # type: ignore[attr-defined]
    assert len(refusals) == 1


async def test_an_unreadable_place_is_rewound_then_halts_naming_it(halts: list[str]) -> None:
    poll = [record(0, 3), record(1, 5), record(1, 6), broken(1, 7), record(1, 8), record(0, 4)]
    again = [broken(1, 7)]
    consumer = consumer_with([poll, list(again), list(again), list(again)], halts)

    first = await consumer.getmany(timeout=0.01, max_records=10)
    # nothing at or after the unreadable offset of partition 1; partition 0 untouched
    assert offsets(first) == [(0, 3), (1, 5), (1, 6), (0, 4)]
    assert consumer.consumer.seeks == [("t", 1, 7)]  # type: ignore[attr-defined]
    assert halts == []

    assert await consumer.getmany(timeout=0.01, max_records=10) == ()
    assert await consumer.getmany(timeout=0.01, max_records=10) == ()
    assert len(halts) == 1
    assert "topic t partition 1 at offset 7 after 3 attempts" in halts[0]
    assert consumer.guard.halted == halts[0]
    # once halted, nothing more is read
    assert await consumer.getmany(timeout=0.01, max_records=10) == ()
    assert len(consumer.consumer.polls) == 1  # type: ignore[attr-defined]


async def test_progress_on_the_partition_starts_the_count_again(halts: list[str]) -> None:
    consumer = consumer_with(
        [[broken(1, 7)], [broken(1, 7)], [record(1, 7)], [broken(1, 8)], [broken(1, 8)]], halts
    )
    for _ in range(5):
        await consumer.getmany(timeout=0.01, max_records=10)
    assert halts == []  # two failures, progress, two failures: never three in a row


async def test_commits_exactly_the_offsets_given_and_maps_errors() -> None:
    consumer = consumer_with([], [])
    client: ScriptedClient = consumer.consumer  # type: ignore[assignment]
    await consumer.commit_offsets({TopicPartition("t", 0): 10, TopicPartition("t", 1): 3})
    assert client.commits == [[("t", 0, 10), ("t", 1, 3)]]

    client.commit_error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    with pytest.raises(AiokafkaError, match="REBALANCE_IN_PROGRESS"):
        await consumer.commit_offsets({TopicPartition("t", 0): 11})


async def test_rewind_seeks_each_assigned_partition_to_its_first_record() -> None:
    consumer = consumer_with([], [])
    records = [LibrdkafkaRecord(m) for m in (record(0, 9), record(1, 4), record(0, 8))]
    records.append(LibrdkafkaRecord(Message(topic="other", partition=0, offset=1)))
    await consumer.rewind(records)
    assert sorted(consumer.consumer.seeks) == [("t", 0, 8), ("t", 1, 4)]  # type: ignore[attr-defined]


def test_revoked_partitions_leave_the_assignment() -> None:
    consumer = consumer_with([], [])
    consumer._on_revoke(None, [LibrdkafkaPartition("t", 1)])
    assert consumer.assignment() == {TopicPartition("t", 0)}
