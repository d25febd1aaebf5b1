"""api.batching.MicroBatcher's bounds: queued events, and callers that left before their batch."""

from __future__ import annotations

import asyncio

import pytest

from api.batching import MicroBatcher, Overloaded
from tests.unit.test_batching import FakeScorer, ids, make


async def test_a_request_beyond_the_queue_bound_is_refused_at_once() -> None:
    scorer = FakeScorer(delay_s=0.2)
    batcher = MicroBatcher(scorer, max_size=10, max_wait_s=0.001, max_queued=5)
    first = asyncio.create_task(batcher.submit(make("a", 4)))
    await scorer.called.wait()
    assert batcher.queued == 4
    with pytest.raises(Overloaded):
        await batcher.submit(make("b", 2))
    assert batcher.queued == 4
    assert ids(await batcher.submit(make("c", 1))) == ["c-0"]  # still fits: 4 + 1
    assert ids(await first) == ["a-0", "a-1", "a-2", "a-3"]
    assert batcher.queued == 0
    await batcher.close()


async def test_a_caller_gone_before_its_batch_ran_is_not_scored() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=10, max_wait_s=0.05, max_queued=100)
    leaving = asyncio.create_task(batcher.submit(make("gone", 2)))
    staying = asyncio.create_task(batcher.submit(make("kept", 1)))
    await asyncio.sleep(0)
    leaving.cancel()
    assert ids(await staying) == ["kept-0"]
    assert scorer.calls == [["kept-0"]]
    assert batcher.queued == 0
    await batcher.close()
