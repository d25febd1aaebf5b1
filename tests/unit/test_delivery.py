"""The delivery guarantees (``streams.delivery``), against a fake producer and commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import TopicPartition

from streams.delivery import SEND_SLICE, Delivery, DeliveryPolicy
from streams.delivery_types import Batch, Handed, Output, Unacknowledged
from streams.exit_codes import ExitCode
from streams.halts import Halted, HaltReason

TP = TopicPartition("events", 0)


class FakeKafka:
    """Outputs whose acknowledgements the test controls, and a commit that records offsets."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self.keys: list[Any] = []
        self.pending: dict[bytes, list[asyncio.Future[None]]] = {}
        self.refuse: dict[bytes, list[BaseException]] = {}
        self.auto_ack = True
        self.commits: list[dict[TopicPartition, int]] = []

    async def send(self, topic: str, value: bytes | None, key: Any, headers: Any) -> Awaitable[Any]:
        self.sent.append((topic, value))
        self.keys.append(key)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        errors = self.refuse.get(value or b"")
        if errors:
            future.set_exception(errors.pop(0))
        elif self.auto_ack:
            future.set_result(None)
        else:
            self.pending.setdefault(value or b"", []).append(future)
        return future

    def ack(self, value: bytes) -> None:
        for future in self.pending.pop(value, []):
            future.set_result(None)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


def delivery(kafka: FakeKafka, max_attempts: int = 5) -> Delivery:
    policy = DeliveryPolicy(
        dlq_topic="events.dlq",
        ack_timeout_s=5,
        max_attempts=max_attempts,
        initial_backoff_s=0.001,
        max_backoff_s=0.001,
    )
    return Delivery(kafka, policy, asyncio.Event())


def outs(*values: bytes, topic: str = "predictions") -> list[Output]:
    return [(topic, v, None, None) for v in values]


def batch(outputs: list[Output], after: int) -> Batch:
    return Batch(outputs, [TP] * len(outputs), {TP: after - len(outputs)}, {TP: after})


async def test_a_failed_ack_re_sends_only_that_output() -> None:
    kafka = FakeKafka()
    kafka.refuse[b"b"] = [KafkaTimeoutError(), KafkaTimeoutError()]
    d = delivery(kafka)
    await d.deliver(batch(outs(b"a", b"b", b"c"), 3), kafka.commit)
    await d.drain()
    assert [v for _, v in kafka.sent] == [b"a", b"b", b"c", b"b", b"b"]
    assert kafka.commits == [{TP: 3}]
    assert d.stats.resends == 2


async def test_nothing_commits_after_a_failed_batch() -> None:
    kafka = FakeKafka()
    kafka.refuse[b"bad"] = [TopicAuthorizationFailedError()] * 10
    d = delivery(kafka, max_attempts=3)
    await d.deliver(batch(outs(b"bad"), 1), kafka.commit)
    await d.drain()
    with pytest.raises(Halted) as halted:
        await d.deliver(batch(outs(b"next"), 2), kafka.commit)
    assert halted.value.reason is HaltReason.OUTPUT_REFUSED
    assert halted.value.exit_code is ExitCode.REPEATED_FAILURE
    assert "the output: to predictions, " in str(halted.value)  # which one, for the operator
    assert kafka.commits == []
    assert [v for _, v in kafka.sent] == [b"bad"] * 3  # bounded, and "next" never sent


async def test_commits_stay_in_order_when_the_second_batch_is_acknowledged_first() -> None:
    kafka = FakeKafka()
    kafka.auto_ack = False
    d = delivery(kafka)
    await d.deliver(batch(outs(b"first"), 10), kafka.commit)
    second = asyncio.create_task(d.deliver(batch(outs(b"second"), 20), kafka.commit))
    await asyncio.sleep(0.01)
    kafka.ack(b"second")
    await asyncio.sleep(0.01)
    assert kafka.commits == []  # the second batch waits for the first
    assert not second.done()  # and two batches in flight is the bound
    kafka.ack(b"first")
    await second
    await d.drain()
    assert kafka.commits == [{TP: 10}, {TP: 20}]


async def test_drain_waits_for_the_last_commit() -> None:
    kafka = FakeKafka()
    kafka.auto_ack = False
    d = delivery(kafka)
    await d.deliver(batch(outs(b"x"), 5), kafka.commit)
    draining = asyncio.create_task(d.drain())
    await asyncio.sleep(0.01)
    assert not draining.done()
    kafka.ack(b"x")
    await draining
    assert kafka.commits == [{TP: 5}]
    assert d.stats.committed == {TP: 5}


async def test_a_dead_letter_refused_as_too_large_is_cut_and_sent_again() -> None:
    kafka = FakeKafka()
    big = b"{" + b"x" * 10_000
    kafka.refuse[big] = [MessageSizeTooLargeError()]
    d = delivery(kafka)
    await d.deliver(batch(outs(big, topic="events.dlq"), 1), kafka.commit)
    await d.drain()
    sizes = [len(v or b"") for _, v in kafka.sent]
    assert sizes[0] == len(big)
    assert sizes[1] < len(big) // 2 + 100
    assert kafka.commits == [{TP: 1}]
    assert d.halted is None


async def test_a_tombstone_dead_letter_refused_for_its_key_is_cut_not_a_halt() -> None:
    kafka = FakeKafka()
    kafka.refuse[b""] = [MessageSizeTooLargeError()]  # the null value's entry
    big_key = b"k" * 10_000
    d = delivery(kafka)
    await d.deliver(batch([("events.dlq", None, big_key, [])], 1), kafka.commit)
    await d.drain()
    assert [v for _, v in kafka.sent] == [None, None]  # still a tombstone
    assert kafka.keys[0] == big_key
    assert len(kafka.keys[1]) < len(big_key) // 2
    assert big_key.startswith(kafka.keys[1])
    assert kafka.commits == [{TP: 1}]
    assert d.halted is None


async def test_a_dead_letter_too_large_even_when_cut_to_nothing_halts_bounded() -> None:
    kafka = FakeKafka()
    kafka.refuse[b""] = [MessageSizeTooLargeError()] * 10  # a broker limit below any record
    d = delivery(kafka, max_attempts=3)
    await d.deliver(batch([("events.dlq", b"", None, [])], 1), kafka.commit)
    await d.drain()
    assert d.halted is not None
    assert d.halted.reason is HaltReason.OUTPUT_REFUSED
    assert "to events.dlq" in str(d.halted)
    assert len(kafka.sent) == 3  # bounded, never an endless shrink-and-resend
    assert kafka.commits == []


async def test_a_halt_in_the_background_is_told_at_once_not_at_the_next_batch() -> None:
    """On a quiet topic no next batch may come: the process must learn of the halt itself."""
    kafka = FakeKafka()
    kafka.refuse[b"a"] = [TopicAuthorizationFailedError()] * 10
    d = delivery(kafka, max_attempts=3)
    told: list[Halted] = []
    d.on_halt = told.append
    await d.deliver(batch(outs(b"a"), 1), kafka.commit)
    await d.drain()
    assert [h.reason for h in told] == [HaltReason.OUTPUT_REFUSED]
    assert told[0].exit_code == ExitCode.REPEATED_FAILURE
    assert kafka.commits == []


async def test_a_shutdown_during_a_retry_leaves_the_batch_uncommitted() -> None:
    kafka = FakeKafka()
    kafka.refuse[b"a"] = [KafkaTimeoutError()] * 100
    d = delivery(kafka)
    d._stopping.set()
    with pytest.raises(Halted) as halted:
        await d.deliver(batch(outs(b"a"), 1), kafka.commit)
    assert halted.value.reason is HaltReason.STOPPING
    assert kafka.commits == []


async def test_a_large_batch_is_handed_over_in_slices_the_loop_runs_between() -> None:
    kafka = FakeKafka()
    d = delivery(kafka)
    passes = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal passes
        while not stop.is_set():
            passes += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    before = passes
    values = [str(i).encode() for i in range(500)]
    await d.deliver(batch(outs(*values), 500), kafka.commit)
    during = passes - before
    stop.set()
    await ticker
    await d.drain()
    assert [v for _, v in kafka.sent] == values  # in order
    assert during >= 500 // SEND_SLICE  # the loop ran between slices
    assert kafka.commits == [{TP: 500}]


class FakeBatchKafka(FakeKafka):
    """Outputs handed over in groups of ``size``: one acknowledgement per group."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.groups: list[list[bytes | None]] = []
        self.fail_groups: list[BaseException] = []

    async def send_many(self, outputs: list[Output], indexes: list[int]) -> Handed:
        handed: Handed = []
        for start in range(0, len(indexes), self.size):
            covered = list(indexes[start : start + self.size])
            self.groups.append([outputs[i][1] for i in covered])
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if self.fail_groups:
                future.set_exception(self.fail_groups.pop(0))
            else:
                future.set_result(None)
            handed.append((future, covered))
        return handed


async def test_a_failed_batch_acknowledgement_re_sends_the_outputs_it_covered() -> None:
    kafka = FakeBatchKafka(size=2)
    kafka.fail_groups = [KafkaTimeoutError()]  # the first group (a, b) is not acknowledged
    d = delivery(kafka)
    await d.deliver(batch(outs(b"a", b"b", b"c", b"d", b"e"), 5), kafka.commit)
    await d.drain()
    assert kafka.groups == [[b"a", b"b"], [b"c", b"d"], [b"e"], [b"a", b"b"]]
    assert kafka.sent == []  # never one by one
    assert kafka.commits == [{TP: 5}]
    assert d.stats.resends == 1


async def test_a_batch_refused_for_good_halts_without_commit() -> None:
    kafka = FakeBatchKafka(size=10)
    kafka.fail_groups = [TopicAuthorizationFailedError()] * 10
    d = delivery(kafka, max_attempts=3)
    await d.deliver(batch(outs(b"a", b"b"), 2), kafka.commit)
    await d.drain()
    with pytest.raises(Halted) as halted:
        await d.deliver(batch(outs(b"next"), 3), kafka.commit)
    assert halted.value.reason is HaltReason.OUTPUT_REFUSED
    assert kafka.commits == []
    assert kafka.groups == [[b"a", b"b"]] * 3


async def test_only_the_outputs_a_group_names_as_unacknowledged_are_re_sent() -> None:
    kafka = FakeBatchKafka(size=3)
    # Of the first group (a, b, c) only b failed; of the second (d, e) none.
    kafka.fail_groups = [Unacknowledged({1: KafkaTimeoutError()})]
    d = delivery(kafka)
    await d.deliver(batch(outs(b"a", b"b", b"c", b"d", b"e"), 5), kafka.commit)
    await d.drain()
    assert kafka.groups == [[b"a", b"b", b"c"], [b"d", b"e"], [b"b"]]
    assert kafka.commits == [{TP: 5}]
    assert d.stats.resends == 1


async def test_kafka_timeouts_are_waited_out_not_counted_as_refusals() -> None:
    """aiokafka's KafkaTimeoutError says retriable=False, but it is the broker being away."""
    kafka = FakeKafka()
    kafka.refuse[b"a"] = [KafkaTimeoutError()] * 8
    d = delivery(kafka, max_attempts=3)
    await d.deliver(batch(outs(b"a"), 1), kafka.commit)
    await d.drain()
    assert d.halted is None
    assert kafka.sent.count(("predictions", b"a")) == 9
    assert kafka.commits == [{TP: 1}]


class RestartableKafka(FakeKafka):
    """Outputs whose producer, once the broker saw a sequence gap, refuses everything until
    it is replaced (as aiokafka's idempotent producer does)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self.stuck = False
        self.restarts: list[int] = []

    async def send(self, topic: str, value: bytes | None, key: Any, headers: Any) -> Awaitable[Any]:
        if self.stuck:
            self.sent.append((topic, value))
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(OutOfOrderSequenceNumber())
            return future
        return await super().send(topic, value, key, headers)

    async def restart(self, seen: int) -> bool:
        self.restarts.append(seen)
        if seen != self.generation:
            return False
        self.generation += 1
        self.stuck = False
        return True


async def test_a_producer_stuck_on_a_sequence_gap_is_replaced_once_then_re_sends() -> None:
    kafka = RestartableKafka()
    kafka.stuck = True
    d = delivery(kafka, max_attempts=3)
    await d.deliver(batch(outs(b"a"), 1), kafka.commit)
    await d.deliver(batch(outs(b"b"), 2), kafka.commit)
    await d.drain()
    assert d.halted is None
    assert kafka.generation == 1  # replaced once, though both batches saw the gap
    assert kafka.commits == [{TP: 1}, {TP: 2}]
    assert kafka.sent.count(("predictions", b"a")) == 2
