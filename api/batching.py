"""Dynamic batching: concurrent requests share one enrichment query and one model call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

from schemas import InputEvent

Result = TypeVar("Result")
"""What the score function returns per event (the sidecar's: a prediction and the
challenger's)."""
Score = Callable[[Sequence[InputEvent]], Awaitable[list[Result]]]
RELEASE_AT_ONCE = 16
"""Callers a finished batch wakes per event-loop pass (see :meth:`MicroBatcher._run`)."""


class Overloaded(RuntimeError):
    """The batcher holds as many events as it may: the request is refused, not queued."""


class MicroBatcher(Generic[Result]):
    """Gathers concurrent requests into one pipeline call of at most ``max_size`` events.

    When no call is running, what arrived is scored at the end of the current event-loop pass
    (the requests read in that pass share the call; a lone request does not wait). While a call
    runs, requests gather until it ends, or for at most ``max_wait_s``, after which a second
    call starts beside it. (A request of ``max_size`` events or more is a call of its own that
    does not count as running: smaller requests do not wait for it.)

    It guarantees:
    1. Each caller gets exactly its own predictions, in its own order, or the batch's error.
    2. A batch never holds more than ``max_size`` events; a request larger than that is
       scored on its own.
    3. A caller that goes away does not disturb the others, and its events are not scored if
       it left before its batch started.
    4. At most ``max_queued`` events wait for or are in a pipeline call; a request that would
       go beyond raises :class:`Overloaded` at once instead of waiting.
    5. A finished batch wakes its callers :data:`RELEASE_AT_ONCE` per event-loop pass, so
       the loop's timers and I/O run between the groups' responses.
    """

    def __init__(
        self,
        score: Score[Result],
        max_size: int,
        max_wait_s: float,
        max_queued: int | None = None,
    ) -> None:
        self._score = score
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._max_queued = max_queued
        self.queued = 0
        self._pending: list[tuple[Sequence[InputEvent], asyncio.Future[list[Result]]]] = []
        self._pending_events = 0
        self._timer: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0
        self.batches = 0

    async def submit(self, events: Sequence[InputEvent]) -> list[Result]:
        if self._max_queued is not None and self.queued + len(events) > self._max_queued:
            raise Overloaded(f"{self.queued} events queued; at most {self._max_queued}")
        self.queued += len(events)
        try:
            return await self._submit(events)
        finally:
            self.queued -= len(events)

    async def _submit(self, events: Sequence[InputEvent]) -> list[Result]:
        if len(events) >= self._max_size:
            return await self._score(events)
        loop = asyncio.get_running_loop()
        if self._pending_events + len(events) > self._max_size:
            self._flush()
        future: asyncio.Future[list[Result]] = loop.create_future()
        self._pending.append((events, future))
        self._pending_events += len(events)
        if self._pending_events >= self._max_size:
            self._flush()
        elif self._timer is None:
            if self._running:
                self._timer = loop.call_later(self._max_wait_s, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._pending_events = self._pending, [], 0
        call = _Call(batch)
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._run(call))
        self._tasks.add(task)
        task.add_done_callback(partial(self._finished, call))

    def _scored(self, call: _Call[Result]) -> None:
        """``call`` no longer counts as running (once): what gathered meanwhile starts now."""
        if call.running:
            call.running = False
            self._running -= 1
            if self._pending and not self._running:
                self._flush()

    def _finished(self, call: _Call[Result], task: asyncio.Task[None]) -> None:
        """Whatever ended the call (a cancellation before or during it included): its slot
        is freed and no caller of it is left waiting."""
        self._tasks.discard(task)
        for _, future in call.batch:
            if not future.done():
                future.cancel()
        self._scored(call)

    async def _run(self, call: _Call[Result]) -> None:
        try:
            batch = [(request, future) for request, future in call.batch if not future.done()]
            if not batch:
                return
            self.batches += 1
            events = [event for request, _ in batch for event in request]
            try:
                predictions = await self._score(events)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
        finally:
            # What gathered during this call is scored now, while its callers are woken.
            self._scored(call)
        start = 0
        for i, (request, future) in enumerate(batch):
            if i and i % RELEASE_AT_ONCE == 0:
                # Each woken caller builds and writes its response on the loop: a timer due
                # now runs after this group, not after the whole batch.
                await asyncio.sleep(0)
            end = start + len(request)
            if not future.done():
                future.set_result(predictions[start:end])
            start = end

    async def close(self) -> None:
        """Score what is pending and wait for every call, those started meanwhile included."""
        while self._pending or self._tasks:
            self._flush()
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Call(Generic[Result]):
    """One pipeline call's requests, and whether it still counts as running."""

    __slots__ = ("batch", "running")

    def __init__(
        self, batch: list[tuple[Sequence[InputEvent], asyncio.Future[list[Result]]]]
    ) -> None:
        self.batch = batch
        self.running = True
