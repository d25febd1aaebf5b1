"""The dead-letter contract (topic ``events.dlq``).

The value is the original record's bytes, unchanged; the headers below say why.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a record was dead-lettered (the ``streamscore.error.kind`` header)."""

    TOMBSTONE = "tombstone"
    """The record's value is null (a tombstone: a delete marker, not an event)."""
    EMPTY_VALUE = "empty_value"
    """The record's value is empty (zero bytes)."""
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
    VALUE_TRUNCATED = "streamscore.value.truncated"
    """``true`` when the value is a prefix of the original, cut to fit the producer's limit."""
    VALUE_ORIGINAL_SIZE = "streamscore.value.original_size"
    """The original value's size in bytes (on truncated dead letters)."""
    HEADERS_DROPPED = "streamscore.headers.dropped"
    """How many of the record's own headers were left out: they could not fit beside its key
    (set only then; all of them are left out, the source position says where to find them)."""
    KEY_TRUNCATED = "streamscore.key.truncated"
    """``true`` when the key is a prefix of the original: the key alone did not fit."""
    KEY_ORIGINAL_SIZE = "streamscore.key.original_size"
    """The original key's size in bytes (on dead letters with a truncated key)."""
