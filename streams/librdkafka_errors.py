"""librdkafka's errors as the Kafka errors the delivery layer decides on.

:class:`streams.delivery.Delivery` tells retriable from fatal and too-large from other refusals
by aiokafka's error classes; a librdkafka error is mapped onto them here, keeping its code, name
and librdkafka's own retriable flag.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from confluent_kafka import KafkaError as LibrdkafkaError

_TOO_LARGE_CODES = {
    LibrdkafkaError.MSG_SIZE_TOO_LARGE,
    LibrdkafkaError.RECORD_LIST_TOO_LARGE,
}
_RETRIABLE_CODES = {
    LibrdkafkaError._MSG_TIMED_OUT,
    LibrdkafkaError._TIMED_OUT,
    LibrdkafkaError._TRANSPORT,
    LibrdkafkaError._ALL_BROKERS_DOWN,
    LibrdkafkaError.REQUEST_TIMED_OUT,
    LibrdkafkaError.NOT_ENOUGH_REPLICAS,
    LibrdkafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    LibrdkafkaError.LEADER_NOT_AVAILABLE,
    LibrdkafkaError.NOT_LEADER_FOR_PARTITION,
    # Purged because another record of its transaction failed: sent again, once that other
    # error (the one decided on, see :func:`consequential`) allows it.
    LibrdkafkaError._PURGE_QUEUE,
    LibrdkafkaError._PURGE_INFLIGHT,
    # A topic not there (yet): waited for until it exists, as on aiokafka.
    LibrdkafkaError._UNKNOWN_TOPIC,
    LibrdkafkaError._UNKNOWN_PARTITION,
    LibrdkafkaError.UNKNOWN_TOPIC_OR_PART,
}


class LibrdkafkaClientError(KafkaError):  # type: ignore[misc]
    """A librdkafka error; ``retriable`` is librdkafka's verdict (or a known transient code)."""

    def __init__(self, error: LibrdkafkaError) -> None:
        super().__init__(f"{error.name()}: {error.str()}")
        self.code = error.code()
        self.name = error.name()
        self.retriable = bool(error.retriable()) or error.code() in _RETRIABLE_CODES
        self.fatal = bool(error.fatal())


class LibrdkafkaTooLargeError(MessageSizeTooLargeError):  # type: ignore[misc]
    """The broker or the client refused a record as too large."""

    def __init__(self, error: LibrdkafkaError) -> None:
        super().__init__(f"{error.name()}: {error.str()}")
        self.code = error.code()


_CONSEQUENTIAL_CODES = frozenset(
    {LibrdkafkaError._PURGE_QUEUE, LibrdkafkaError._PURGE_INFLIGHT, LibrdkafkaError._STATE}
)


def consequential(error: BaseException) -> bool:
    """Whether ``error`` only follows from another record's failure in the same transaction:
    librdkafka then purges the records it still holds and refuses new ones with ``_STATE``
    (the transaction must be aborted), so the error that counts is that other one."""
    return isinstance(error, LibrdkafkaClientError) and error.code in _CONSEQUENTIAL_CODES


def to_kafka_error(error: LibrdkafkaError) -> KafkaError:
    """The aiokafka-style error the delivery layer understands, for one librdkafka error."""
    if error.code() in _TOO_LARGE_CODES:
        return LibrdkafkaTooLargeError(error)
    return LibrdkafkaClientError(error)
