"""Exponential backoff that a shutdown can interrupt."""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    """Delays ``initial, 2*initial, ...`` capped at ``maximum``; :meth:`wait` ends early on stop."""

    def __init__(
        self, initial_s: float, maximum_s: float, stopping: asyncio.Event, *, attempts: int = 0
    ) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._stopping = stopping
        self.attempts = attempts
        """Delays already taken; pass it to continue a backoff across attempts."""

    async def wait(self) -> bool:
        """Sleep the next delay. Returns False if a stop was requested (do not retry)."""
        delay = min(self._maximum, self._initial * (2**self.attempts))
        self.attempts += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        return not self._stopping.is_set()
