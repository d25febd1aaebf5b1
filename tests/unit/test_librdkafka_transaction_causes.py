"""Which error a failed librdkafka transaction is decided on (exactly-once)."""

from __future__ import annotations

import asyncio

from aiokafka.errors import MessageSizeTooLargeError
from confluent_kafka import KafkaError

from streams.delivery_types import Unacknowledged
from streams.librdkafka_errors import to_kafka_error
from streams.librdkafka_transactions import _all_failures, _kafka_error

PURGED = to_kafka_error(KafkaError(KafkaError._PURGE_QUEUE))
STATE = to_kafka_error(KafkaError(KafkaError._STATE))
TOO_LARGE = to_kafka_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))


def test_the_cause_is_the_refusal_not_what_librdkafka_did_because_of_it() -> None:
    """Once one record fails, librdkafka purges the rest and refuses new ones with _STATE:
    whichever group's future failed first, the refusal is what counts."""
    failures = [
        (Unacknowledged({0: PURGED, 1: PURGED}), [0, 1]),
        (STATE, [2]),  # refused by produce() at once: the transaction must be aborted
        (Unacknowledged({3: TOO_LARGE, 4: PURGED}), [3, 4]),
    ]
    merged = _all_failures(failures)
    assert isinstance(merged, Unacknowledged)
    assert merged.failed == {0: PURGED, 1: PURGED, 2: STATE, 3: TOO_LARGE, 4: PURGED}
    cause = _kafka_error(merged)
    assert isinstance(cause, MessageSizeTooLargeError)
    assert not cause.retriable


def test_a_consequential_error_alone_is_still_the_cause() -> None:
    assert _kafka_error(_all_failures([(Unacknowledged({0: PURGED}), [0])])) is PURGED
    assert _kafka_error(_all_failures([(STATE, [0]), (STATE, [1])])) is STATE


def test_a_cancellation_is_not_merged_into_the_kafka_errors() -> None:
    cancelled = asyncio.CancelledError()
    assert _all_failures([(Unacknowledged({0: TOO_LARGE}), [0]), (cancelled, [1])]) is cancelled
