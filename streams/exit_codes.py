"""The scorer's process exit codes: what a supervisor, a container runtime or a test reads."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Why the scorer stopped. Codes 2 and up are fatal: restarting without a fix repeats them."""

    OK = 0
    """Stopped on request (SIGTERM/SIGINT) after finishing the batch in hand."""
    BATCH_FAILED = 1
    """A batch could not be completed (e.g. Kafka unreachable); a restart re-reads it."""
    CONFIGURATION = 2
    """Configuration or model error at start-up."""
    DEAD_LETTER_FLOOD = 3
    """Too many recent records failed validation: a bad producer deploy. Nothing past the
    batch that tripped it was committed."""
    UNREADABLE_RECORD = 4
    """A place in the input topic could not be fetched or decoded after bounded retries (the
    log names topic, partition and offset). Nothing at or past it was committed or skipped."""
    REPEATED_FAILURE = 5
    """The same batch failed for an unexpected reason too many times in a row, or an output
    was refused by Kafka for a reason that retrying cannot fix. Nothing past it was committed."""


FATAL_EXIT_CODES = frozenset(
    {
        ExitCode.CONFIGURATION,
        ExitCode.DEAD_LETTER_FLOOD,
        ExitCode.UNREADABLE_RECORD,
        ExitCode.REPEATED_FAILURE,
    }
)
