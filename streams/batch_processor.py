"""One consumed batch: parse, score, publish predictions and dead letters, then commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from schemas import InputEvent, Prediction
from scoring import EnrichmentUnavailable, ScoringPipeline, ScoringTimeout
from settings import Settings
from streams.backoff import Backoff
from streams.dead_letter_guard import DeadLetterFlood, DeadLetterGuard
from streams.dead_letters import Headers, dead_letter, fit_dead_letter, record_size
from streams.exit_codes import ExitCode
from streams.records import Rejection, read_record

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[Any, Any]


class Publish(Protocol):
    """Send one record; the awaitable resolves once Kafka acknowledged it."""

    def __call__(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers | None
    ) -> Awaitable[Awaitable[Any]]: ...


Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]


class StopRequested(Exception):
    """The batch cannot be completed now (a shutdown arrived while it waited on a retry, or
    an earlier batch failed): nothing is committed. ``exit_code`` says why, for the runner."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.BATCH_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StreamStats:
    consumed: int = 0
    scored: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    commit_failures: int = 0
    retries: int = 0
    batches: int = 0
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("parse", "score", "publish", "commit"), 0.0)
    )
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    """The next offset to read, per partition, as last committed by this process."""
    batch_sizes: list[int] = field(default_factory=list)


Output = tuple[str, bytes | None, bytes | None, Headers | None]


def _parse_all(
    records: Sequence[Record], max_bytes: int, max_features: int
) -> tuple[list[InputEvent], list[datetime | None], list[tuple[Record, Rejection]]]:
    events: list[InputEvent] = []
    times: list[datetime | None] = []
    rejected: list[tuple[Record, Rejection]] = []
    for record in records:
        parsed = read_record(record.value, record.timestamp, max_bytes, max_features)
        if isinstance(parsed, Rejection):
            rejected.append((record, parsed))
        else:
            events.append(parsed[0])
            times.append(parsed[1])
    return events, times, rejected


def _outputs(
    predictions: Sequence[Prediction],
    rejected: Sequence[tuple[Record, Rejection]],
    output_topic: str,
    dlq_topic: str,
    max_request_size: int,
) -> list[Output]:
    """(topic, value, key, headers) of every prediction and dead letter of a batch."""
    outputs: list[Output] = [
        (output_topic, p.model_dump_json().encode(), p.entity_id.encode(), None)
        for p in predictions
    ]
    for record, rejection in rejected:
        key, value, headers = fit_dead_letter(*dead_letter(record, rejection), max_request_size)
        outputs.append((dlq_topic, value, key, headers))
    return outputs


_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


class BatchProcessor:
    """Processes the batches of records from the input topic.

    :meth:`process` guarantees:
    1. Every record becomes exactly one output: a prediction (valid event) or a dead letter
       (the original bytes, with headers naming the reason and the source position).
    2. A bad record never stops the batch: it is dead-lettered and the rest are scored.
    3. A batch's offsets are committed only after every prediction and dead letter of the
       batch has been acknowledged by Kafka (``acks=all``), and only after the previous batch
       was committed. If anything fails, nothing is committed: MongoDB outages and publish
       failures are retried with backoff until they succeed or a shutdown is requested (then
       the records are redelivered on restart).
    4. When too many recent records fail validation (a bad producer deploy) it raises
       :class:`DeadLetterFlood` before dead-lettering them.
    5. Once a batch was left uncommitted (stop, flood or error), every later call raises
       :class:`StopRequested`: nothing is ever committed past an unprocessed record.

    Pipelining: a call returns once its outputs are sent and the *previous* batch is committed;
    its own acknowledgements and commit complete in the background while the next batch is
    parsed and scored (at most two batches in flight). :meth:`drain` waits for the last one.
    """

    def __init__(
        self,
        pipeline: ScoringPipeline,
        publish: Publish,
        settings: Settings,
        stopping: asyncio.Event,
    ) -> None:
        self.pipeline = pipeline
        self._publish = publish
        self._kafka = settings.kafka
        self._stream = settings.stream
        self._stopping = stopping
        self._guard = DeadLetterGuard(
            self._stream.dead_letter_halt_ratio,
            self._stream.dead_letter_window,
            self._stream.dead_letter_min_records,
        )
        self._completing: asyncio.Task[None] | None = None
        self.halted: str | None = None
        self.stats = StreamStats()

    def _backoff(self) -> Backoff:
        return Backoff(
            self._stream.retry_initial_backoff_s, self._stream.retry_max_backoff_s, self._stopping
        )

    async def process(self, records: Sequence[Record], commit: Commit) -> None:
        if self.halted is not None:
            # After a batch was left uncommitted, no later batch may commit past it.
            raise StopRequested(f"halted: {self.halted}")
        if not records:
            return
        try:
            await self._process(records, commit)
        except (StopRequested, DeadLetterFlood) as exc:
            self.halted = self.halted or str(exc)
            raise

    async def drain(self) -> None:
        """Wait until the last batch handed over is acknowledged and committed (or failed)."""
        task = self._completing
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _process(self, records: Sequence[Record], commit: Commit) -> None:
        clock = time.perf_counter
        stages = self.stats.stage_seconds
        started = clock()
        self.stats.consumed += len(records)
        self.stats.batches += 1
        self.stats.batch_sizes.append(len(records))
        if len(self.stats.batch_sizes) > 10_000:
            del self.stats.batch_sizes[:5_000]
        loop = asyncio.get_running_loop()
        # Parsing is CPU work: it runs in a worker thread so the event loop stays responsive.
        events, times, rejected = await loop.run_in_executor(
            None,
            _parse_all,
            records,
            self._stream.max_record_bytes,
            self._stream.max_features_per_event,
        )
        self._guard.check(len(events), len(rejected))
        parse_done = clock()
        stages["parse"] += parse_done - started
        predictions = await self._score(events, times)
        scored = clock()
        stages["score"] += scored - parse_done
        outputs = await loop.run_in_executor(
            None,
            _outputs,
            predictions,
            rejected,
            self._kafka.output_topic,
            self._kafka.dlq_topic,
            self._kafka.max_request_size,
        )
        previous = self._completing
        if previous is not None and previous.done() and previous.exception() is not None:
            raise StopRequested(f"the previous batch failed: {previous.exception()!r}")
        sent = await self._send(outputs)
        stages["publish"] += clock() - scored
        self._log_rejections(records, rejected)
        task = loop.create_task(
            self._complete(previous, outputs, sent, records, commit, len(predictions), rejected)
        )
        task.add_done_callback(self._completed)
        self._completing = task
        if previous is not None:
            await asyncio.shield(previous)  # bounds the pipeline to two batches in flight
        if self._stopping.is_set():
            await asyncio.shield(task)  # shutting down: finish this batch before returning

    def _completed(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self.halted = self.halted or "a batch's completion was cancelled"
            return
        error = task.exception()
        if error is not None:
            self.halted = self.halted or str(error)
            if not isinstance(error, StopRequested):
                log.error(
                    "a batch could not be completed; nothing after it is committed: %r",
                    error,
                    extra={"event": "halt"},
                )

    async def _complete(
        self,
        previous: asyncio.Task[None] | None,
        outputs: list[Output],
        sent: dict[asyncio.Future[Any], int],
        records: Sequence[Record],
        commit: Commit,
        scored: int,
        rejected: Sequence[tuple[Record, Rejection]],
    ) -> None:
        """1. wait for the previous batch's commit (never commit past a failed batch);
        2. wait for this batch's acknowledgements, re-sending what failed; 3. commit."""
        clock = time.perf_counter
        started = clock()
        if previous is not None:
            try:
                await asyncio.shield(previous)
            except BaseException as exc:
                raise StopRequested(f"the previous batch failed: {exc!r}") from exc
        await self._await_acks(outputs, sent)
        self.stats.scored += scored
        for _, rejection in rejected:
            kind = rejection.kind.value
            self.stats.dead_lettered[kind] = self.stats.dead_lettered.get(kind, 0) + 1
        acked = clock()
        self.stats.stage_seconds["publish"] += acked - started
        await self._commit(records, commit)
        self.stats.stage_seconds["commit"] += clock() - acked

    def _log_rejections(
        self, records: Sequence[Record], rejected: Sequence[tuple[Record, Rejection]]
    ) -> None:
        if rejected:
            first, reason = rejected[0]
            log.warning(
                "dead-lettered %d of %d records: %s",
                len(rejected),
                len(records),
                "; ".join(
                    f"{r.topic}[{r.partition}]@{r.offset} {rej.kind}: {rej.message}"
                    for r, rej in rejected[:3]
                ),
                extra={
                    "event": "dead_letter",
                    "count": len(rejected),
                    "kind": reason.kind.value,
                    "topic": first.topic,
                    "partition": first.partition,
                    "offset": first.offset,
                },
            )
        log.debug(
            "batch sent: %d records, %d dead-lettered",
            len(records),
            len(rejected),
            extra={"event": "batch", "records": len(records)},
        )

    async def _score(
        self, events: list[InputEvent], times: list[datetime | None]
    ) -> list[Prediction]:
        backoff = self._backoff()
        while True:
            try:
                return await self.pipeline.score(events, times)
            except (EnrichmentUnavailable, ScoringTimeout) as exc:
                self.stats.retries += 1
                log.warning(
                    "scoring failed, will retry (attempt %d): %s",
                    backoff.attempts + 1,
                    exc,
                    extra={"event": "retry", "stage": "score", "attempt": backoff.attempts + 1},
                )
                if not await backoff.wait():
                    raise StopRequested("stopping while scoring was being retried") from exc

    async def _send(
        self, outputs: list[Output], indexes: Sequence[int] | None = None
    ) -> dict[asyncio.Future[Any], int]:
        """Hand outputs to the producer; returns delivery future -> output index. An output
        the producer refused at once gets an already-failed future."""
        loop = asyncio.get_running_loop()
        sent: dict[asyncio.Future[Any], int] = {}
        for index in range(len(outputs)) if indexes is None else indexes:
            future: asyncio.Future[Any]
            try:
                future = asyncio.ensure_future(await self._publish(*outputs[index]))
            except KafkaError as exc:
                future = loop.create_future()
                future.set_exception(exc)
            sent[future] = index
        return sent

    async def _await_acks(
        self, outputs: list[Output], sent: dict[asyncio.Future[Any], int]
    ) -> None:
        """Wait for Kafka's acknowledgements; re-send only the outputs that failed or were not
        acknowledged in time, with backoff, until all are acknowledged.

        A dead letter refused as too large is cut to half its size and re-sent. Any other
        error that retrying cannot fix (``retriable`` false) is re-sent at most
        ``STREAMSCORE_STREAM__MAX_BATCH_ATTEMPTS`` times, then the batch is given up
        (:class:`StopRequested` with :attr:`ExitCode.REPEATED_FAILURE`): never re-sent forever.
        """
        backoff = self._backoff()
        fatal_attempts = 0
        while True:
            failed: list[int] = []
            errors: list[BaseException] = []
            if sent:
                done, not_done = await asyncio.wait(sent, timeout=self._kafka.delivery_timeout_s)
                for future in not_done:
                    future.cancel()
                    failed.append(sent[future])
                    errors.append(TimeoutError("not acknowledged in time"))
                for future in done:
                    error = future.exception()
                    if error is not None:
                        if not isinstance(error, KafkaError):
                            raise error
                        failed.append(sent[future])
                        errors.append(error)
            if not failed:
                return
            self.stats.retries += 1
            fatal = self._shrink_or_give_up(outputs, failed, errors)
            if fatal is not None:
                fatal_attempts += 1
                if fatal_attempts >= self._stream.max_batch_attempts:
                    raise StopRequested(
                        f"Kafka refused an output {fatal_attempts} times with an error that "
                        f"retrying cannot fix: {fatal!r}",
                        ExitCode.REPEATED_FAILURE,
                    )
            log.warning(
                "%d of %d outputs were not acknowledged, will re-send them (attempt %d): %r",
                len(failed),
                len(sent),
                backoff.attempts + 1,
                errors[0],
                extra={"event": "retry", "stage": "publish", "attempt": backoff.attempts + 1},
            )
            if not await backoff.wait():
                raise StopRequested("stopping while publishing was being retried")
            sent = await self._send(outputs, sorted(failed))

    def _shrink_or_give_up(
        self, outputs: list[Output], failed: Sequence[int], errors: Sequence[BaseException]
    ) -> BaseException | None:
        """Cut too-large dead letters to half; return the first other non-retriable error."""
        fatal: BaseException | None = None
        for index, error in zip(failed, errors, strict=True):
            topic, value, key, headers = outputs[index]
            if isinstance(error, _TOO_LARGE) and topic == self._kafka.dlq_topic and value:
                half = record_size(key, value, headers or []) // 2
                key, cut, headers = fit_dead_letter(key, value, headers or [], half)
                outputs[index] = (topic, cut, key, headers)
            elif isinstance(error, KafkaError) and not error.retriable and fatal is None:
                fatal = error
        return fatal

    async def _commit(self, records: Sequence[Record], commit: Commit) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        try:
            await commit(offsets)
            self.stats.commits += 1
            self.stats.committed.update(offsets)
        except KafkaError as exc:
            # Typically a rebalance took the partitions away: the records will be consumed
            # again by their new owner (at-least-once: duplicates, never losses).
            self.stats.commit_failures += 1
            log.warning(
                "offset commit failed; the batch will be redelivered: %r",
                exc,
                extra={"event": "commit_failed"},
            )
