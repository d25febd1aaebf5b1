"""The dead-letter contract (topic ``events.dlq``).

The value is the original record's bytes, unchanged; the headers below say why.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a record was dead-lettered (the ``streamscore.error.kind`` header)."""

    EMPTY_VALUE = "empty_value"
    """The record has no value, or an empty one."""
    TOO_LARGE = "too_large"
    """The value is larger than ``STREAMSCORE_STREAM__MAX_RECORD_BYTES``."""
    INVALID_ENCODING = "invalid_encoding"
    """The value is not UTF-8."""
    INVALID_JSON = "invalid_json"
    """The value is not JSON."""
    INVALID_EVENT = "invalid_event"
    """The value is JSON but not a valid event (the message names the field)."""


class DeadLetterHeader(StrEnum):
    """Header names on every dead letter."""

    ERROR_KIND = "streamscore.error.kind"
    ERROR_MESSAGE = "streamscore.error.message"
    SOURCE_TOPIC = "streamscore.source.topic"
    SOURCE_PARTITION = "streamscore.source.partition"
    SOURCE_OFFSET = "streamscore.source.offset"
    SOURCE_TIMESTAMP = "streamscore.source.timestamp"
