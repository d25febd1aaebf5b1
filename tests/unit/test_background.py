"""A background task: started once, stopped and awaited, restartable."""

from __future__ import annotations

import asyncio

from telemetry.background import BackgroundTask


async def test_starts_once_and_stop_waits_for_the_end() -> None:
    started, finished = [0], [0]

    async def run() -> None:
        started[0] += 1
        try:
            await asyncio.Event().wait()
        finally:
            finished[0] += 1

    task = BackgroundTask(run)
    task.start()
    task.start()
    await asyncio.sleep(0)
    assert (started[0], finished[0]) == (1, 0)
    await task.stop()
    assert finished[0] == 1
    await task.stop()  # stopping a stopped task is fine
    task.start()
    await asyncio.sleep(0)
    await task.stop()
    assert (started[0], finished[0]) == (2, 2)
