"""Measuring event-loop lag: how late a periodic timer fires."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from telemetry.background import BackgroundTask

Sleep = Callable[[float], Awaitable[None]]


class LoopLagMonitor:
    """Sleeps ``interval_s`` in a loop and reports how much later than asked it woke up.

    A blocked event loop (a model run inline, say) shows up directly as lag. Each sample goes
    to ``on_sample`` as it is taken (a metrics histogram observes it there); ``last_s`` holds
    the latest. ``max_samples`` > 0 also keeps the first that many samples in ``samples``, for
    benchmarks that want raw values; a serving process keeps none.

    ``clock`` and ``sleep`` default to the running loop's; tests pass fakes to run hours of
    samples in a moment.
    """

    def __init__(
        self,
        interval_s: float = 0.05,
        on_sample: Callable[[float], None] | None = None,
        *,
        max_samples: int = 100_000,
        clock: Callable[[], float] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._interval = interval_s
        self._on_sample = on_sample
        self._clock = clock
        self._sleep = sleep
        self._task = BackgroundTask(self._run)
        self.samples: list[float] = []
        self.max_samples = max_samples
        self.last_s = 0.0

    async def _run(self) -> None:
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            started = clock()
            await self._sleep(self._interval)
            lag = max(0.0, clock() - started - self._interval)
            self.last_s = lag
            if len(self.samples) < self.max_samples:
                self.samples.append(lag)
            if self._on_sample is not None:
                self._on_sample(lag)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
