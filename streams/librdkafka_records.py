"""A librdkafka message, read like an aiokafka ``ConsumerRecord`` by the rest of the scorer.

Attributes are read once from the C message; headers only when asked for (dead letters),
since most records never need them. confluent-kafka cannot return headers whose names are not
UTF-8 (it raises); such a record keeps its key, value and place, and its dead letter carries
``streamscore.headers.unreadable`` instead of the original headers.
"""

from __future__ import annotations

import operator
from typing import Any

from confluent_kafka import Message

from streams.dead_letters import Headers

UNREADABLE_HEADERS = "streamscore.headers.unreadable"

_read_headers = operator.methodcaller("headers")
"""``Message.headers()`` through the generic call path, which checks what it returns. For a
header name that is not UTF-8, confluent-kafka returns a list *and* leaves the
``UnicodeDecodeError`` set; a call site that Python has specialised (after a few calls) does not
check, and the pending error then surfaces later, anywhere (it halted a scorer after a handful
of such records)."""


class LibrdkafkaRecord:
    """topic, partition, offset, timestamp, key, value and (lazily) headers of one record."""

    __slots__ = ("_message", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, message: Message) -> None:
        self._message = message
        self.topic: str = message.topic() or ""
        self.partition: int = message.partition() or 0
        self.offset: int = message.offset() or 0
        self.timestamp: int = message.timestamp()[1]
        self.key: bytes | None = message.key()
        self.value: bytes | None = message.value()

    @property
    def headers(self) -> Headers:
        try:
            raw: Any = _read_headers(self._message)
        except (SystemError, UnicodeDecodeError):
            return [(UNREADABLE_HEADERS, b"header names that are not UTF-8")]
        return list(raw or ())

    def __repr__(self) -> str:
        return f"LibrdkafkaRecord({self.topic}[{self.partition}]@{self.offset})"
