"""Measuring event-loop lag: how late a periodic timer fires."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class LoopLagMonitor:
    """Sleeps ``interval_s`` in a loop and reports how much later than asked it woke up.

    A blocked event loop (a model run inline, say) shows up directly as lag.
    """

    def __init__(
        self, interval_s: float = 0.05, on_sample: Callable[[float], None] | None = None
    ) -> None:
        self._interval = interval_s
        self._on_sample = on_sample
        self._task: asyncio.Task[None] | None = None
        self.samples: list[float] = []
        self.max_samples = 100_000
        self.last_s = 0.0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - started - self._interval)
            self.last_s = lag
            if len(self.samples) < self.max_samples:
                self.samples.append(lag)
            if self._on_sample is not None:
                self._on_sample(lag)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
