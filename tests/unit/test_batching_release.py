"""api.batching.MicroBatcher wakes a finished batch's callers a group per event-loop pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from api.batching import RELEASE_AT_ONCE, MicroBatcher
from schemas import InputEvent


async def _echo(events: Sequence[InputEvent]) -> list[str]:
    return [e.event_id for e in events]


async def test_callers_of_one_batch_wake_in_groups_each_with_its_own_results() -> None:
    callers = 2 * RELEASE_AT_ONCE + 3
    batcher: MicroBatcher[str] = MicroBatcher(_echo, max_size=256, max_wait_s=0.001)
    passes = 0

    async def count_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            await asyncio.sleep(0)

    async def one(i: int) -> tuple[list[str], int]:
        got = await batcher.submit([InputEvent(event_id=f"e-{i}", entity_id="u")])
        return got, passes

    ticker = asyncio.create_task(count_passes())
    try:
        results = await asyncio.gather(*(one(i) for i in range(callers)))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await batcher.close()

    assert [got for got, _ in results] == [[f"e-{i}"] for i in range(callers)]
    assert batcher.batches == 1
    woke_at = [at for _, at in results]
    assert woke_at == sorted(woke_at)
    assert len(set(woke_at)) == 3  # 16, 16 and 3 callers, each group in its own pass
