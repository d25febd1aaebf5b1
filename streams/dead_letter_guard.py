"""Stopping a bad deploy from emptying a whole topic into the dead-letter topic."""

from __future__ import annotations

from collections import deque


class DeadLetterFlood(RuntimeError):
    """Too large a share of recent records failed validation: the scorer halts."""


class DeadLetterGuard:
    """A sliding window over the last ``window`` records' outcomes (valid / rejected).

    :meth:`check` guarantees: it raises :class:`DeadLetterFlood` *before* a batch is
    dead-lettered when, counting that batch, more than ``ratio`` of the window's records were
    rejected (once the window holds ``min_records``). The batch is then neither dead-lettered nor
    committed, so after the fix is deployed the records are read again.
    """

    def __init__(self, ratio: float, window: int, min_records: int) -> None:
        self._ratio = ratio
        self._window = window
        self._min = min(min_records, window)
        self._outcomes: deque[bool] = deque()
        self._rejected = 0

    def _after(self, valid: int, rejected: int) -> tuple[int, int]:
        """(records, rejected) in the window if this batch were added."""
        added = valid + rejected
        if added >= self._window:
            # The window would hold only (the tail of) this batch; rejected ones come last.
            return self._window, min(rejected, self._window)
        drop = max(0, len(self._outcomes) + added - self._window)
        dropped_bad = sum(1 for i in range(drop) if self._outcomes[i])
        return len(self._outcomes) + added - drop, self._rejected - dropped_bad + rejected

    def check(self, valid: int, rejected: int) -> None:
        """Record a batch's outcome, or raise :class:`DeadLetterFlood` without recording it."""
        records, bad = self._after(valid, rejected)
        if rejected and records >= self._min and bad / records > self._ratio:
            raise DeadLetterFlood(
                f"{bad} of the last {records} records failed validation "
                f"(more than {self._ratio:.0%}): this looks like a bad producer deploy, not bad "
                "records. The scorer halts without dead-lettering or committing them; fix the "
                "producer (or raise STREAMSCORE_STREAM__DEAD_LETTER_HALT_RATIO) and restart."
            )
        for outcome in [False] * valid + [True] * rejected:
            self._outcomes.append(outcome)
            self._rejected += outcome
            if len(self._outcomes) > self._window:
                self._rejected -= self._outcomes.popleft()
