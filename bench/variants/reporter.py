"""What every worker process runs beside its consumer: a loop-lag monitor and the ticks."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

from bench.protocol import ScorerCounters, emit, emit_tick
from telemetry.loop_lag import LoopLagMonitor


class Reporter:
    """Counts handled events, gathers loop-lag samples and prints a tick every ``tick_s``.

    A variant sets ``assigned`` (how many partitions it holds: "ready" is said once that is
    non-zero, and the bench's clock starts there) and, for the scorer, ``counters``.
    """

    def __init__(self, tick_s: float, lag_interval_s: float) -> None:
        self.count = 0
        self._lags: list[float] = []
        self._tick_s = tick_s
        self.monitor = LoopLagMonitor(lag_interval_s, on_sample=self._lags.append, max_samples=0)
        self.assigned: Callable[[], int] = lambda: 0
        self.counters: Callable[[], ScorerCounters | None] = lambda: None

    def tick(self) -> None:
        lags = [round(x * 1000, 3) for x in self._lags]
        self._lags.clear()
        counters = self.counters()
        if counters is not None:
            self.count = counters.scored
        emit_tick(self.count, lags, self.assigned(), counters)

    async def _watch_ready(self) -> None:
        while True:
            try:
                assigned = self.assigned()
            except Exception:  # the consumer may not exist yet
                assigned = 0
            if assigned:
                emit("ready", pid=os.getpid(), assigned=assigned)
                return
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        self.monitor.start()
        ready = asyncio.create_task(self._watch_ready())
        try:
            while True:
                await asyncio.sleep(self._tick_s)
                self.tick()
        finally:
            ready.cancel()
            await self.monitor.stop()


async def until_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
