"""At-least-once delivery of a batch's outputs: send, await acknowledgements, re-send, commit
the input offsets in batch order, drain at shutdown.

This is the one place that decides when input offsets are committed. Processing (parsing,
scoring) hands it a batch's outputs and offsets; where outputs go is an injected
:class:`Outputs` (one idempotent Kafka producer in production, FastStream's in-memory broker in
tests), and how offsets are committed is a per-batch :data:`Commit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
)
from aiokafka.structs import TopicPartition

from streams.backoff import Backoff
from streams.dead_letters import describe_output, fit_dead_letter, record_size
from streams.delivery_types import (
    Acked,
    Batch,
    BatchOutputs,
    Commit,
    DeliveryStats,
    Handed,
    Observe,
    Output,
    Outputs,
    Unacknowledged,
)
from streams.halts import Halted, HaltReason

log = logging.getLogger(__name__)

_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
SEND_SLICE = 64
"""Outputs handed over per event-loop pass: a batch of 500 sent in one pass held the loop for
~5 ms (about 11 µs per record with aiokafka)."""


def _cannot_be_retried(error: BaseException) -> bool:
    """A Kafka error that re-sending cannot fix. aiokafka marks its own timeout (a record not
    handed to a broker within ``request_timeout_ms``: the broker down, a leader moving) as
    not retriable, but it is an outage, waited out like any other."""
    return (
        isinstance(error, KafkaError)
        and not error.retriable
        and not isinstance(error, KafkaTimeoutError)
    )


@dataclass(frozen=True)
class DeliveryPolicy:
    """Timeouts and retry bounds (from the Kafka and stream settings)."""

    dlq_topic: str
    ack_timeout_s: float
    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float


class Delivery:
    """At-least-once: delivers batches in order. :meth:`deliver` guarantees:

    1. A batch's offsets are committed only after every one of its outputs was acknowledged
       by Kafka, and only after the previous batch's commit succeeded: commits stay in batch
       order even when a later batch's acknowledgements arrive first.
    2. An output that fails or is not acknowledged within ``ack_timeout_s`` is re-sent with
       the outputs its acknowledgement covers (itself, or its record batch; the batch's
       acknowledged outputs are not), with exponential backoff, until it is acknowledged:
       retriable errors are waited out without limit.
    3. A dead letter refused as too large is cut to half its size and re-sent; any other error
       that retrying cannot fix is re-sent at most ``max_attempts`` times, then the batch halts
       (:attr:`HaltReason.OUTPUT_REFUSED`).
    4. Once a batch halts, it and every later batch stay uncommitted: each later call raises
       :class:`Halted` before sending anything.
    5. At most two batches are in flight: a call returns once its outputs are handed over and
       the previous batch is committed; its own acknowledgements and commit complete in the
       background. While stopping, a call returns only after its own batch is committed.
    6. :meth:`drain` returns once the last batch handed over is committed (or has failed).
    7. A failed commit (a rebalance took the partitions) is logged and counted; the new owner
       reads the batch again (duplicates, never losses).
    """

    def __init__(
        self,
        outputs: Outputs,
        policy: DeliveryPolicy,
        stopping: asyncio.Event,
        observe: Observe | None = None,
    ) -> None:
        self._outputs = outputs
        self._policy = policy
        self._stopping = stopping
        self._observe = observe
        self._last: asyncio.Task[None] | None = None
        self.halted: Halted | None = None
        self.stats = DeliveryStats()
        self.on_halt: Callable[[Halted], None] | None = None
        """Told at once when a batch completing in the background halts (so the process
        stops now, not when the next batch arrives, which on a quiet topic may be never)."""

    def _backoff(self) -> Backoff:
        policy = self._policy
        return Backoff(policy.initial_backoff_s, policy.max_backoff_s, self._stopping)

    def check(self) -> None:
        """Raise :class:`Halted` if nothing may be committed any more."""
        if self.halted is not None:
            raise self.halted
        previous = self._last
        if previous is not None and previous.done() and not previous.cancelled():
            error = previous.exception()
            if error is not None:
                self.halt(error)
                raise self.halted  # type: ignore[misc]

    def halt(self, error: BaseException) -> None:
        """Stop committing: this batch and every later one stay uncommitted."""
        if self.halted is None:
            self.halted = (
                error
                if isinstance(error, Halted)
                else Halted(HaltReason.PREVIOUS_BATCH_FAILED, repr(error))
            )

    async def deliver(self, batch: Batch, commit: Commit, on_acked: Acked | None = None) -> None:
        """Send the batch's outputs, then (in the background) await their acknowledgements
        and commit its offsets after the previous batch's commit. See the class."""
        self.check()
        previous = self._last
        outputs = batch.outputs
        generation = getattr(self._outputs, "generation", 0)
        sent = await self._send(outputs, range(len(outputs)))
        task = asyncio.get_running_loop().create_task(
            self._complete(previous, outputs, sent, generation, batch.after, commit, on_acked)
        )
        task.add_done_callback(self._completed)
        self._last = task
        if previous is not None:
            await asyncio.shield(previous)  # two batches in flight at most
        if self._stopping.is_set():
            await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait until the last batch handed over is committed (or failed)."""
        task = self._last
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def _completed(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self.halt(Halted(HaltReason.PREVIOUS_BATCH_FAILED, "a completion was cancelled"))
            return
        error = task.exception()
        if error is not None:
            self.halt(error)
            if not isinstance(error, Halted) or error.reason is not HaltReason.STOPPING:
                log.error(
                    "a batch could not be completed; nothing after it is committed: %s",
                    error,
                    extra={"event": "halt"},
                )
                if self.on_halt is not None and self.halted is not None:
                    self.on_halt(self.halted)

    async def _complete(
        self,
        previous: asyncio.Task[None] | None,
        outputs: list[Output],
        sent: Handed,
        generation: int,
        offsets: dict[TopicPartition, int],
        commit: Commit,
        on_acked: Acked | None,
    ) -> None:
        """1. wait for the previous batch's commit; 2. wait for this batch's
        acknowledgements, re-sending what failed; 3. commit."""
        started = time.perf_counter()
        if previous is not None:
            try:
                await asyncio.shield(previous)
            except BaseException as exc:
                raise Halted(HaltReason.PREVIOUS_BATCH_FAILED, repr(exc)) from exc
        await self._await_acks(outputs, sent, generation)
        if self._observe is not None:
            self._observe("ack", time.perf_counter() - started)
        if on_acked is not None:
            on_acked()
        await self._commit(offsets, commit)

    async def _send(self, outputs: list[Output], indexes: Sequence[int]) -> Handed:
        """Hand outputs over; returns each delivery future with the indexes of the outputs it
        acknowledges. An output refused at once gets an already-failed future."""
        if isinstance(self._outputs, BatchOutputs):
            return await self._outputs.send_many(outputs, indexes)
        loop = asyncio.get_running_loop()
        sent: Handed = []
        for n, index in enumerate(indexes, 1):
            future: asyncio.Future[Any]
            try:
                future = asyncio.ensure_future(await self._outputs.send(*outputs[index]))
            except KafkaError as exc:
                future = loop.create_future()
                future.set_exception(exc)
            sent.append((future, [index]))
            if n % SEND_SLICE == 0:
                await asyncio.sleep(0)  # timers and acknowledgements run between slices
        return sent

    async def _await_acks(self, outputs: list[Output], sent: Handed, generation: int) -> None:
        backoff = self._backoff()
        refusals = 0
        while True:
            failed, errors = await self._unacknowledged(sent)
            if not failed:
                return
            self.stats.resends += 1
            await self._restart_if_stuck(errors, generation)
            refused = self._shrink_or_give_up(outputs, failed, errors)
            if refused is not None:
                refusals += 1
                if refusals >= self._policy.max_attempts:
                    index, fatal = refused
                    raise Halted(
                        HaltReason.OUTPUT_REFUSED,
                        f"Kafka refused an output {refusals} times with an error that "
                        f"retrying cannot fix: {fatal!r}; the output: "
                        f"{describe_output(outputs[index])}",
                    )
            log.warning(
                "%d of %d outputs were not acknowledged, will re-send them (attempt %d): %r",
                len(failed),
                sum(len(indexes) for _, indexes in sent),
                backoff.attempts + 1,
                errors[0],
                extra={"event": "retry", "stage": "publish", "attempt": backoff.attempts + 1},
            )
            if not await backoff.wait():
                raise Halted(HaltReason.STOPPING, "stopping while publishing was being retried")
            generation = getattr(self._outputs, "generation", 0)
            sent = await self._send(outputs, sorted(failed))

    async def _restart_if_stuck(self, errors: Sequence[BaseException], generation: int) -> None:
        """After an out-of-order sequence number, aiokafka's producer never sends again:
        replace it (once for every batch that saw it) before re-sending."""
        restart = getattr(self._outputs, "restart", None)
        if restart is None or not any(isinstance(e, OutOfOrderSequenceNumber) for e in errors):
            return
        if await restart(generation):
            log.warning(
                "the producer stopped after an out-of-order sequence number (a batch the "
                "broker refused); replaced it with a new one",
                extra={"event": "retry", "stage": "publish"},
            )

    async def _unacknowledged(self, sent: Handed) -> tuple[list[int], list[BaseException]]:
        failed: list[int] = []
        errors: list[BaseException] = []
        if not sent:
            return failed, errors
        covers = dict(sent)
        done, not_done = await asyncio.wait(covers, timeout=self._policy.ack_timeout_s)
        for future in not_done:
            future.cancel()
            failed.extend(covers[future])
            errors.extend([TimeoutError("not acknowledged in time")] * len(covers[future]))
        for future in done:
            error = future.exception()
            if isinstance(error, Unacknowledged):  # only these of the future's outputs
                failed.extend(error.failed)
                errors.extend(error.failed.values())
            elif error is not None:
                if not isinstance(error, KafkaError):
                    raise error
                failed.extend(covers[future])
                errors.extend([error] * len(covers[future]))
        return failed, errors

    def _shrink_or_give_up(
        self, outputs: list[Output], failed: Sequence[int], errors: Sequence[BaseException]
    ) -> tuple[int, BaseException] | None:
        """Cut too-large dead letters to half; return the first other non-retriable error
        and the index of its output."""
        fatal: tuple[int, BaseException] | None = None
        for index, error in zip(failed, errors, strict=True):
            topic, value, key, headers = outputs[index]
            if isinstance(error, _TOO_LARGE) and topic == self._policy.dlq_topic:
                size = record_size(key, value, headers or [])
                key, cut, headers = fit_dead_letter(key, value, headers or [], size // 2)
                outputs[index] = (topic, cut, key, headers)
                if record_size(key, cut, headers) < size:
                    continue
                # As small as it gets: a refusal like any other (bounded, then a halt).
            if _cannot_be_retried(error) and fatal is None:
                fatal = (index, error)
        return fatal

    async def _commit(self, offsets: dict[TopicPartition, int], commit: Commit) -> None:
        started = time.perf_counter()
        try:
            await commit(offsets)
        except KafkaError as exc:
            self.stats.commit_failures += 1
            log.warning(
                "offset commit failed; the batch will be redelivered: %r",
                exc,
                extra={"event": "commit_failed"},
            )
            return
        self.stats.commits += 1
        self.stats.committed.update(offsets)
        if self._observe is not None:
            self._observe("commit", time.perf_counter() - started)
