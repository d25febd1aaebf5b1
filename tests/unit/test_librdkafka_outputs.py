"""librdkafka's refusals reach the delivery layer as the errors it decides on: too large (a
dead letter is cut), retriable (re-sent without limit) or not (bounded)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import pytest
from aiokafka.errors import KafkaError as AiokafkaError
from aiokafka.errors import MessageSizeTooLargeError
from confluent_kafka import KafkaError, Producer

from settings import load_settings
from streams.delivery_types import Output, Unacknowledged
from streams.librdkafka_errors import to_kafka_error
from streams.librdkafka_options import producer_config
from streams.librdkafka_outputs import GROUP, LibrdkafkaOutputs, Report, _Group


def test_errors_map_to_what_delivery_decides_on() -> None:
    too_large = to_kafka_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert isinstance(too_large, MessageSizeTooLargeError)
    timed_out = to_kafka_error(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert isinstance(timed_out, AiokafkaError)
    assert timed_out.retriable
    for purged in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        # a record purged by an abort of its transaction: the batch is read again, not counted
        # as one of its max_batch_attempts failures
        assert to_kafka_error(KafkaError(purged)).retriable
    refused = to_kafka_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not refused.retriable
    assert "TOPIC_AUTHORIZATION_FAILED" in str(refused)


def unreachable_producer(**extra: object) -> Producer:
    kafka = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1", "max_request_size": 2_048})
    config = producer_config(kafka.kafka) | {"message.timeout.ms": 300, **extra}
    return Producer(config, logger=logging.getLogger("unreachable-producer"))


async def test_a_record_over_the_limit_is_refused_as_too_large_at_once() -> None:
    outputs = LibrdkafkaOutputs(unreachable_producer(), asyncio.get_running_loop())
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await outputs.send("t", b"x" * 4_096, None, None)
    finally:
        await outputs.close()


async def test_an_unacknowledged_record_fails_retriably_through_its_delivery_report() -> None:
    outputs = LibrdkafkaOutputs(unreachable_producer(), asyncio.get_running_loop())
    try:
        sent = [
            await outputs.send("t", b"v", b"k", [("h", None), ("b", b"\xff")]) for _ in range(3)
        ]
        for future in sent:
            with pytest.raises(AiokafkaError) as failed:
                await asyncio.wait_for(future, 10)
            assert failed.value.retriable
    finally:
        await outputs.close()


async def test_send_many_hands_over_groups_that_name_the_records_that_failed() -> None:
    outputs = LibrdkafkaOutputs(unreachable_producer(), asyncio.get_running_loop())
    records: list[Output] = [("t", b"v%d" % i, b"k", None) for i in range(300)]
    records[7] = ("t", b"x" * 4_096, b"k", None)  # over the limit: refused at once
    try:
        handed = await outputs.send_many(records, range(300))
        refused = [(future, covered) for future, covered in handed if covered == [7]]
        groups = [(future, covered) for future, covered in handed if covered != [7]]
        assert [len(covered) for _, covered in groups] == [GROUP, GROUP, 299 - 2 * GROUP]
        assert sorted(i for _, covered in groups for i in covered) == [
            i for i in range(300) if i != 7
        ]
        assert len(refused) == 1
        with pytest.raises(MessageSizeTooLargeError):
            await refused[0][0]
        for future, covered in groups:  # nobody acknowledges: every record is named, retriable
            with pytest.raises(Unacknowledged) as failed:
                await asyncio.wait_for(future, 10)
            assert sorted(failed.value.failed) == covered
            assert all(
                isinstance(e, AiokafkaError) and e.retriable for e in failed.value.failed.values()
            )
    finally:
        await outputs.close()


class FailedReport:
    """What a delivery report gives back of a record (confluent_kafka.Message's getters): its
    topic, key and value, never its headers."""

    def __init__(self, output: Output) -> None:
        self._topic, self._value, self._key, _headers = output

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> None:
        return None


def _report(group: _Group, outputs: list[Output], index: int, error: KafkaError | None) -> None:
    """Deliver ``outputs[index]``'s report the way send_many wires its callback."""
    report: Any = FailedReport(outputs[index])
    if outputs[index][3]:
        group.delivered_at(index, error, report)
    else:
        group.delivered(error, report)


async def test_a_group_names_each_failed_record() -> None:
    outputs: list[Output] = [
        ("p", b"a", b"k1", None),
        ("p", b"a", b"k1", None),  # the same record twice: either may be named
        ("d", b"x", None, [("offset", b"1")]),
        ("d", b"x", None, [("offset", b"2")]),  # differs from the one before in a header only
        ("d", None, b"k", [("h", None)]),
        ("p", b"b", b"k2", None),
        ("p", None, None, None),
    ]
    reports: deque[Report] = deque()
    group = _Group(asyncio.get_running_loop().create_future(), reports, outputs)
    group.indexes.extend(range(len(outputs)))
    group.seal()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    for index in range(len(outputs)):
        _report(group, outputs, index, timed_out if index in (1, 3, 4, 6) else None)
    assert len(reports) == 1
    future, errors = reports[0]
    assert future is group.future
    assert isinstance(errors, dict)
    assert sorted(errors) == [0, 3, 4, 6]  # the first of the two alike; exactly 3, 4 and 6


async def test_one_failed_dead_letter_fails_no_acknowledged_prediction() -> None:
    outputs: list[Output] = [("p", b"%d" % i, b"k", None) for i in range(5)]
    outputs.append(("d", b"bad", None, [("streamscore.error.kind", b"invalid_json")]))
    reports: deque[Report] = deque()
    group = _Group(asyncio.get_running_loop().create_future(), reports, outputs)
    group.indexes.extend(range(len(outputs)))
    group.seal()
    for index in range(len(outputs)):
        _report(
            group, outputs, index, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if index == 5 else None
        )
    errors = reports[0][1]
    assert isinstance(errors, dict)
    assert list(errors) == [5]


async def test_a_group_without_failures_ends_acknowledged_and_an_unknown_one_fails_the_rest() -> (
    None
):
    outputs: list[Output] = [("p", b"%d" % i, b"k", None) for i in range(4)]
    for failure, expected in ((None, None), (("p", b"other", b"k", None), [0, 1, 2, 3])):
        reports: deque[Report] = deque()
        group = _Group(asyncio.get_running_loop().create_future(), reports, outputs)
        group.indexes.extend(range(4))
        for index, output in enumerate(outputs):
            unknown = failure is not None and index == 2
            report: Any = FailedReport(failure if unknown else output)  # type: ignore[arg-type]
            error = KafkaError(KafkaError._MSG_TIMED_OUT) if unknown else None
            group.delivered(error, report)
        assert not reports  # not sealed yet: more records could join
        group.seal()
        errors = reports[0][1]
        assert (sorted(errors) if isinstance(errors, dict) else errors) == expected
