"""Kafka refusing a setting: what a restart without a change would meet again (exit 2).

Both clients report these: aiokafka raises its own error classes (from ``start`` or from a
producer's ``InitProducerId``), librdkafka gives an error code (from a consumer's poll, or a
``KafkaException`` from a call).
"""

from __future__ import annotations

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    InvalidTransactionTimeout,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException

from streams.librdkafka_errors import LibrdkafkaClientError

REFUSED_SETTINGS = (
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    InvalidTransactionTimeout,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
"""aiokafka's errors for a setting Kafka refuses (group id, session or transaction timeout,
credentials, ACLs)."""

REFUSED_SETTING_CODES = frozenset(
    {
        LibrdkafkaError.INVALID_SESSION_TIMEOUT,
        LibrdkafkaError.INVALID_GROUP_ID,
        LibrdkafkaError.INVALID_TRANSACTION_TIMEOUT,
        LibrdkafkaError.GROUP_AUTHORIZATION_FAILED,
        LibrdkafkaError.TOPIC_AUTHORIZATION_FAILED,
        LibrdkafkaError.CLUSTER_AUTHORIZATION_FAILED,
        LibrdkafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        LibrdkafkaError.SASL_AUTHENTICATION_FAILED,
        LibrdkafkaError._AUTHENTICATION,  # how librdkafka reports SASL credentials refused
        LibrdkafkaError.UNSUPPORTED_SASL_MECHANISM,
    }
)
"""The same refusals as librdkafka's error codes (librdkafka alone would retry them)."""


def refused_setting(exc: BaseException) -> bool:
    """Whether ``exc`` (from either client) is Kafka refusing a setting."""
    if isinstance(exc, REFUSED_SETTINGS):
        return True
    if isinstance(exc, KafkaException) and exc.args:
        error = exc.args[0]
        return isinstance(error, LibrdkafkaError) and error.code() in REFUSED_SETTING_CODES
    return isinstance(exc, LibrdkafkaClientError) and exc.code in REFUSED_SETTING_CODES
