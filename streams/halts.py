"""Why a stream stops committing, and the exit code that says so."""

from __future__ import annotations

from enum import StrEnum

from streams.exit_codes import ExitCode


class HaltReason(StrEnum):
    """Why nothing more may be committed (see :class:`Halted`)."""

    STOPPING = "stopping"
    """A shutdown arrived while a batch waited on a retry; it is re-read at the next start."""
    PREVIOUS_BATCH_FAILED = "previous_batch_failed"
    """An earlier batch could not be completed: committing a later one would skip it."""
    OUTPUT_REFUSED = "output_refused"
    """Kafka refused an output for a reason retrying cannot fix, ``max_batch_attempts`` times."""
    DEAD_LETTER_FLOOD = "dead_letter_flood"
    """Most recent records failed validation: a bad producer deploy, not bad records."""
    REPEATED_FAILURE = "repeated_failure"
    """A batch failed unexpectedly ``max_batch_attempts`` times in a row."""
    REFUSED_SETTING = "refused_setting"
    """Kafka refused a setting (a transaction timeout above the broker's maximum, a
    transactional id the ACLs refuse): a restart without a change is refused again."""
    FENCED = "fenced"
    """Another producer with this process's transactional id started (exactly-once on
    librdkafka): two processes share an id, or this one was replaced while it hung."""

    @property
    def exit_code(self) -> ExitCode:
        return {
            HaltReason.STOPPING: ExitCode.BATCH_FAILED,
            HaltReason.PREVIOUS_BATCH_FAILED: ExitCode.BATCH_FAILED,
            HaltReason.OUTPUT_REFUSED: ExitCode.REPEATED_FAILURE,
            HaltReason.DEAD_LETTER_FLOOD: ExitCode.DEAD_LETTER_FLOOD,
            HaltReason.REPEATED_FAILURE: ExitCode.REPEATED_FAILURE,
            HaltReason.REFUSED_SETTING: ExitCode.CONFIGURATION,
            HaltReason.FENCED: ExitCode.CONFIGURATION,
        }[self]


class Halted(Exception):
    """Nothing more is committed: the batch in hand and every later one stay uncommitted and
    are read again after a restart."""

    def __init__(self, reason: HaltReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def exit_code(self) -> ExitCode:
        return self.reason.exit_code


class HaltState:
    """``halted`` with the two calls a delivery offers on it: once set, :meth:`check` raises
    it before anything else is delivered."""

    halted: Halted | None = None

    def check(self) -> None:
        if self.halted is not None:
            raise self.halted

    def halt(self, error: BaseException) -> None:
        if self.halted is None and isinstance(error, Halted):
            self.halted = error
