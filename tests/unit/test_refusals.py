"""Which Kafka errors are a refused setting (exit 2), from either client."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    InvalidTransactionTimeout,
    KafkaConnectionError,
    NotLeaderForPartitionError,
    TransactionalIdAuthorizationFailed,
)
from confluent_kafka import KafkaError, KafkaException

from streams.librdkafka_errors import to_kafka_error
from streams.refusals import refused_setting


@pytest.mark.parametrize(
    "error",
    [
        InvalidTransactionTimeout(),
        TransactionalIdAuthorizationFailed(),
        KafkaException(KafkaError(KafkaError.INVALID_TRANSACTION_TIMEOUT, fatal=True)),
        KafkaException(KafkaError(KafkaError.INVALID_SESSION_TIMEOUT)),
        to_kafka_error(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)),
        KafkaException(KafkaError(KafkaError._AUTHENTICATION)),
    ],
)
def test_refusals_of_a_setting_are_recognised_from_either_client(error: Exception) -> None:
    assert refused_setting(error)


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError(),
        NotLeaderForPartitionError(),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
        KafkaException(),  # no error object at all
        to_kafka_error(KafkaError(KafkaError._MSG_TIMED_OUT)),
        RuntimeError("not Kafka's"),
    ],
)
def test_other_errors_are_not_refusals(error: Exception) -> None:
    assert not refused_setting(error)
