"""api.batching.MicroBatcher with a fake score function: merging, slicing, limits, errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import pytest

from api.batching import MicroBatcher
from schemas import Enrichment, InputEvent, ModelRef, Prediction

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
REF = ModelRef(name="fake", version="1")


class Poisoned(RuntimeError):
    """What the fake scorer raises for a batch holding a poisoned event."""


class FakeScorer:
    """Records every call; scores an event as its number; fails batches holding ``poison``."""

    def __init__(self, delay_s: float = 0.0, poison: Collection[str] = ()) -> None:
        self.delay_s = delay_s
        self.poison = set(poison)
        self.calls: list[list[str]] = []
        self.called = asyncio.Event()

    async def __call__(self, events: Sequence[InputEvent]) -> list[Prediction]:
        self.calls.append([e.event_id for e in events])
        self.called.set()
        await asyncio.sleep(self.delay_s)
        if self.poison.intersection(e.event_id for e in events):
            raise Poisoned(f"batch of {len(events)} holds a poisoned event")
        return [
            Prediction(
                event_id=e.event_id,
                entity_id=e.entity_id,
                score=float(e.event_id.rsplit("-", 1)[1]),
                model=REF,
                enrichment=Enrichment.MISS,
                event_time=NOW,
                scored_at=NOW,
            )
            for e in events
        ]


def make(prefix: str, count: int) -> list[InputEvent]:
    return [InputEvent(event_id=f"{prefix}-{i}", entity_id=f"u-{i % 3}") for i in range(count)]


def ids(predictions: Sequence[Prediction]) -> list[str]:
    return [p.event_id for p in predictions]


async def test_concurrent_submits_are_merged_into_one_call() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=0.02)
    requests = [make(f"r{i}", 1) for i in range(10)]

    results = await asyncio.gather(*(batcher.submit(r) for r in requests))

    assert len(scorer.calls) == 1
    assert sorted(scorer.calls[0]) == sorted(f"r{i}-0" for i in range(10))
    assert batcher.batches == 1
    assert [ids(r) for r in results] == [[f"r{i}-0"] for i in range(10)]


async def test_each_caller_gets_its_own_slice_in_its_own_order() -> None:
    scorer = FakeScorer(delay_s=0.001)
    batcher = MicroBatcher(scorer, max_size=1_000, max_wait_s=0.01)
    requests = [make(f"r{i}", size) for i, size in enumerate([3, 1, 5, 2, 4, 1])]
    for request in requests:
        request.reverse()  # the caller's order, not sorted order, must come back

    results = await asyncio.gather(*(batcher.submit(r) for r in requests))

    assert len(scorer.calls) == 1
    for request, result in zip(requests, results, strict=True):
        assert ids(result) == [e.event_id for e in request]
        assert [p.score for p in result] == [float(e.event_id.split("-")[1]) for e in request]


async def test_no_call_receives_more_than_max_size_events() -> None:
    rng = random.Random(7)
    scorer = FakeScorer(delay_s=0.002)
    batcher = MicroBatcher(scorer, max_size=16, max_wait_s=0.005)
    requests = [make(f"r{i}", rng.randint(1, 7)) for i in range(60)]

    async def staggered(i: int, request: list[InputEvent]) -> list[Prediction]:
        await asyncio.sleep(rng.random() * 0.01 if i % 2 else 0)
        return await batcher.submit(request)

    results = await asyncio.gather(*(staggered(i, r) for i, r in enumerate(requests)))

    sizes = [len(call) for call in scorer.calls]
    assert max(sizes) <= 16, sizes
    assert len(scorer.calls) < len(requests), "nothing was merged"
    scored = [event_id for call in scorer.calls for event_id in call]
    assert sorted(scored) == sorted(e.event_id for r in requests for e in r)  # each once
    for request, result in zip(requests, results, strict=True):
        assert ids(result) == [e.event_id for e in request]
    # A request is never split over two calls.
    for request in requests:
        wanted = {e.event_id for e in request}
        assert sum(1 for call in scorer.calls if wanted & set(call)) == 1


@pytest.mark.parametrize("size", [4, 9])
async def test_a_request_of_max_size_or_more_is_scored_alone(size: int) -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=4, max_wait_s=0.02)
    small, big, other = make("small", 1), make("big", size), make("other", 2)

    results = await asyncio.gather(
        batcher.submit(small), batcher.submit(big), batcher.submit(other)
    )

    assert [ids(r) for r in results] == [ids_of(small), ids_of(big), ids_of(other)]
    assert ids_of(big) in scorer.calls  # its own call, nothing else in it
    assert sorted(scorer.calls, key=len) == [ids_of(small) + ids_of(other), ids_of(big)]


def ids_of(events: Sequence[InputEvent]) -> list[str]:
    return [e.event_id for e in events]


async def test_an_error_reaches_every_caller_of_that_batch_and_no_other() -> None:
    scorer = FakeScorer(delay_s=0.01, poison={"bad-0"})
    batcher = MicroBatcher(scorer, max_size=4, max_wait_s=0.02)
    # The first four events fill batch 1 (flushed on size); the rest go to batch 2.
    first = [make("a", 1), make("bad", 1), make("b", 2)]
    second = [make("c", 1), make("d", 2)]

    results = await asyncio.gather(
        *(batcher.submit(r) for r in [*first, *second]), return_exceptions=True
    )

    assert len(scorer.calls) == 2
    assert scorer.calls[0] == ["a-0", "bad-0", "b-0", "b-1"]
    for outcome in results[:3]:
        assert isinstance(outcome, Poisoned)
    assert [ids(r) for r in results[3:]] == [["c-0"], ["d-0", "d-1"]]  # type: ignore[arg-type]

    # The batcher keeps working after a failed batch.
    assert ids(await batcher.submit(make("e", 1))) == ["e-0"]


async def test_an_error_in_a_request_scored_alone_reaches_only_that_caller() -> None:
    scorer = FakeScorer(delay_s=0.01, poison={"big-2"})
    batcher = MicroBatcher(scorer, max_size=3, max_wait_s=0.01)
    big, small = make("big", 3), make("small", 1)

    outcomes = await asyncio.gather(
        batcher.submit(big), batcher.submit(small), return_exceptions=True
    )

    assert isinstance(outcomes[0], Poisoned)
    assert ids(outcomes[1]) == ["small-0"]  # type: ignore[arg-type]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    scorer = FakeScorer(delay_s=0.1)
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=0.01)
    requests = [make(f"r{i}", 2) for i in range(4)]
    tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
    await asyncio.sleep(0)  # every request is pending now
    tasks[1].cancel()  # goes away before the flush
    await asyncio.wait_for(scorer.called.wait(), timeout=1)  # the batch is being scored
    tasks[2].cancel()  # goes away while its batch is scored

    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert ids(outcomes[0]) == ["r0-0", "r0-1"]  # type: ignore[arg-type]
    assert ids(outcomes[3]) == ["r3-0", "r3-1"]  # type: ignore[arg-type]
    assert len(scorer.calls) == 1
    # ... and later callers are served as usual.
    assert ids(await batcher.submit(make("later", 1))) == ["later-0"]


async def test_close_flushes_pending_requests_without_waiting_for_the_timer() -> None:
    scorer = FakeScorer(delay_s=0.05)
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=60)
    first = asyncio.create_task(batcher.submit(make("first", 1)))
    await asyncio.wait_for(scorer.called.wait(), timeout=1)  # a call runs: the rest wait
    tasks = [asyncio.create_task(batcher.submit(make(f"r{i}", 2))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert scorer.calls == [["first-0"]]  # waiting for the running call or the (long) timer

    await asyncio.wait_for(batcher.close(), timeout=1)

    assert len(scorer.calls) == 2
    assert all(t.done() for t in [first, *tasks])
    assert [ids(t.result()) for t in tasks] == [[f"r{i}-0", f"r{i}-1"] for i in range(3)]


async def test_close_with_nothing_pending_makes_no_call() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=10, max_wait_s=0.001)
    assert ids(await batcher.submit(make("r", 1))) == ["r-0"]
    await batcher.close()
    assert scorer.calls == [["r-0"]]
    assert batcher.batches == 1


async def test_a_lone_request_is_scored_at_once() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert ids(await batcher.submit(make("r", 1))) == ["r-0"]
    assert loop.time() - started < 1  # not the 5 s of max_wait


async def test_requests_arriving_during_a_call_gather_until_it_ends() -> None:
    scorer = FakeScorer(delay_s=0.05)
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=5)
    first = asyncio.create_task(batcher.submit(make("first", 1)))
    await asyncio.wait_for(scorer.called.wait(), timeout=1)
    later = [asyncio.create_task(batcher.submit(make(f"r{i}", 1))) for i in range(5)]
    await asyncio.sleep(0.01)
    assert scorer.calls == [["first-0"]]

    results = await asyncio.wait_for(asyncio.gather(first, *later), timeout=1)

    assert scorer.calls == [["first-0"], [f"r{i}-0" for i in range(5)]]
    assert [ids(r) for r in results[1:]] == [[f"r{i}-0"] for i in range(5)]


async def test_a_long_call_lets_the_next_start_after_max_wait() -> None:
    scorer = FakeScorer(delay_s=0.5)
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=0.02)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(batcher.submit(make("first", 1)))
    await asyncio.wait_for(scorer.called.wait(), timeout=1)
    scorer.called.clear()
    started = loop.time()
    second = asyncio.create_task(batcher.submit(make("second", 1)))

    await asyncio.wait_for(scorer.called.wait(), timeout=1)

    waited = loop.time() - started
    assert 0.015 <= waited < 0.4  # the timer, not the end of the first call
    assert scorer.calls == [["first-0"], ["second-0"]]
    assert ids(await second) == ["second-0"]
    assert ids(await first) == ["first-0"]


async def test_a_call_cancelled_before_it_ran_frees_its_slot_and_its_callers() -> None:
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=5)
    waiting = asyncio.create_task(batcher.submit(make("gone", 1)))
    await asyncio.sleep(0)  # pending; its call is flushed at the end of this pass
    await asyncio.sleep(0)
    (call,) = batcher._tasks  # the call's task, not started yet
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, timeout=1)  # not left hanging

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert ids(await batcher.submit(make("next", 1))) == ["next-0"]
    assert loop.time() - started < 1  # scored at once, not after max_wait


async def test_close_waits_for_calls_started_while_it_waits() -> None:
    scorer = FakeScorer(delay_s=0.05)
    batcher = MicroBatcher(scorer, max_size=100, max_wait_s=5)
    first = asyncio.create_task(batcher.submit(make("first", 1)))
    await asyncio.wait_for(scorer.called.wait(), timeout=1)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0)
    late = asyncio.create_task(batcher.submit(make("late", 1)))  # gathers behind "first"

    await asyncio.wait_for(closing, timeout=1)

    assert late.done()
    assert ids(late.result()) == ["late-0"]
    assert ids(await first) == ["first-0"]
