"""One consumed batch: parse, score, and hand its predictions and dead letters to delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from aiokafka.structs import ConsumerRecord, TopicPartition

from schemas import ErrorKind, InputEvent
from scoring import EnrichmentUnavailable, ScoringPipeline, ScoringTimeout
from scoring.pipeline import Scored
from settings import Settings, StreamSettings
from streams.backoff import Backoff
from streams.dead_letter_guard import DeadLetterFlood, DeadLetterGuard
from streams.dead_letters import dead_letter, fit_dead_letter
from streams.delivery_types import Batch, BatchDelivery, Commit, DeliveryStats, Output
from streams.halts import Halted, HaltReason
from streams.metrics import StreamMetrics
from streams.records import Rejection, read_record

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[Any, Any]

NOT_FAILED_VALIDATION = frozenset({ErrorKind.TOMBSTONE, ErrorKind.EMPTY_VALUE})
"""Dead letters that do not count towards a dead-letter flood: a tombstone or an empty value
is no event by design (compacted and shared topics hold them), not a producer's bad deploy."""


@dataclass
class StreamStats:
    """Running totals of this process (tests and the bench read them; metrics are separate)."""

    consumed: int = 0
    scored: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    """Batches retried: scoring (MongoDB, model timeouts) and unexpected errors."""
    batches: int = 0
    delivery: DeliveryStats = field(default_factory=DeliveryStats)

    @property
    def commits(self) -> int:
        return self.delivery.commits

    @property
    def commit_failures(self) -> int:
        return self.delivery.commit_failures

    @property
    def committed(self) -> dict[TopicPartition, int]:
        return self.delivery.committed


@dataclass
class Parsed:
    """A batch's records split into events (with their records) and rejections."""

    events: list[InputEvent] = field(default_factory=list)
    times: list[datetime | None] = field(default_factory=list)
    sources: list[TopicPartition] = field(default_factory=list)
    """The input partition of each event."""
    rejected: list[tuple[Record, Rejection]] = field(default_factory=list)
    dead_letters: list[Output] = field(default_factory=list)
    """The dead letter of each rejected record, ready to send."""
    dead_sources: list[TopicPartition] = field(default_factory=list)


MIN_DEAD_LETTER_LIMIT = 512
"""Dead letters are never cut below this (the marks and source headers alone take ~300)."""


def _parse_all(
    records: Sequence[Record], stream: StreamSettings, dlq_topic: str, max_request_size: int
) -> Parsed:
    """Parse a batch and write the dead letter of every record that is not an event (CPU
    work: it runs in a worker thread)."""
    parsed = Parsed()
    max_bytes, max_features = stream.max_record_bytes, stream.max_features_per_event
    partitions: dict[tuple[str, int], TopicPartition] = {}  # one object per partition
    for record in records:
        result = read_record(record.value, record.timestamp, max_bytes, max_features)
        key = (record.topic, record.partition)
        tp = partitions.get(key) or partitions.setdefault(key, TopicPartition(*key))
        if isinstance(result, Rejection):
            parsed.rejected.append((record, result))
            dead_key, value, headers = fit_dead_letter(
                *dead_letter(record, result), max_request_size
            )
            parsed.dead_letters.append((dlq_topic, value, dead_key, headers))
            parsed.dead_sources.append(tp)
        else:
            parsed.events.append(result[0])
            parsed.times.append(result[1])
            parsed.sources.append(tp)
    return parsed


def _outputs(
    scored: Scored, parsed: Parsed, output_topic: str, challenger_topic: str
) -> tuple[list[Output], list[TopicPartition]]:
    """(topic, value, key, headers) of every prediction, challenger prediction and dead
    letter of a batch, and the input partition each one comes from (a challenger prediction's
    is its event's, so exactly-once commits it with that partition's offsets). The JSON and
    the dead letters were made in the executor: this only lays them out."""
    outputs: list[Output] = []
    sources: list[TopicPartition] = []
    for rows, topic in ((scored.main, output_topic), (scored.shadow, challenger_topic)):
        if rows is not None and len(rows):
            outputs.extend(
                [
                    (topic, value, key, None)
                    for value, key in zip(rows.encoded, rows.keys, strict=True)
                ]
            )
            sources.extend(parsed.sources)
    outputs.extend(parsed.dead_letters)
    sources.extend(parsed.dead_sources)
    return outputs, sources


class BatchProcessor:
    """Processes the batches of records from the input topic.

    :meth:`process` guarantees:
    1. Every record becomes exactly one output: a prediction (valid event) or a dead letter
       (the original record, with headers naming the reason and the source position).
    2. A bad record never stops the batch: it is dead-lettered and the rest are scored.
    3. MongoDB outages and scoring timeouts are retried with backoff until they succeed; a
       shutdown meanwhile leaves the batch uncommitted (:class:`Halted`, ``STOPPING``).
    4. When too many recent records fail validation (a bad producer deploy) it halts
       (``DEAD_LETTER_FLOOD``) before dead-lettering them. Tombstones and empty values are
       dead-lettered, and never count as failed (:data:`NOT_FAILED_VALIDATION`).
    5. When and in which order offsets are committed is :class:`Delivery`'s (it commits a
       batch only after all its outputs are acknowledged, in batch order, never past a halt).
    6. With ``overlap``, a batch is scored and handed to delivery in the background once it
       is parsed, while the caller fetches and parses the next one. One batch at a time is in
       the background, and it reaches delivery before the next batch does (outputs and
       commits keep batch order). An unexpected error there is retried in the background with
       a growing backoff; after ``max_batch_attempts`` in a row it halts
       (``REPEATED_FAILURE``). A halt in the background reaches :attr:`on_halt` at once and
       is raised again by the next call.
    """

    def __init__(
        self,
        pipeline: ScoringPipeline,
        delivery: BatchDelivery,
        settings: Settings,
        stopping: asyncio.Event,
        metrics: StreamMetrics,
    ) -> None:
        self.pipeline = pipeline
        self.delivery = delivery
        self._kafka = settings.kafka
        self._stream = settings.stream
        self._challenger_topic = settings.challenger.topic
        self._stopping = stopping
        self._metrics = metrics
        self._guard = DeadLetterGuard(
            self._stream.dead_letter_halt_ratio,
            self._stream.dead_letter_window,
            self._stream.dead_letter_min_records,
        )
        self.stats = StreamStats(delivery=delivery.stats)
        self.dead_letter_limit = settings.kafka.max_request_size
        """Dead letters are cut to fit this many bytes (lowered by
        :meth:`dead_letters_refused_as_too_large`)."""
        self.on_halt: Callable[[Halted], None] | None = None
        """Told when the batch in the background halts (no later call may come soon)."""
        self._background: asyncio.Task[None] | None = None

    def dead_letters_refused_as_too_large(self, size: int) -> bool:
        """Kafka refused a dead letter of ``size`` bytes as too large (a topic limit lowered
        while running; exactly-once reads the batch again rather than re-sending): cut later
        ones to half that. Whether the limit went down (False once it is as low as it goes,
        so a refusal that cutting cannot fix ends as any other)."""
        lowered = max(MIN_DEAD_LETTER_LIMIT, min(self.dead_letter_limit, size) // 2)
        if lowered >= self.dead_letter_limit:
            return False
        log.warning(
            "a dead letter of %d bytes was refused as too large: dead letters are cut to %d "
            "bytes from now on",
            size,
            lowered,
            extra={"event": "topic_limit"},
        )
        self.dead_letter_limit = lowered
        return True

    async def process(
        self, records: Sequence[Record], commit: Commit, *, overlap: bool = False
    ) -> None:
        self.delivery.check()  # nothing is processed after a halt
        if not records:
            return
        try:
            await self._process(records, commit, overlap)
        except Halted as exc:
            self.delivery.halt(exc)
            raise

    async def drain(self) -> None:
        """Wait until the batch in the background (if any) is handed over, then until the last
        batch handed over is acknowledged and committed (or failed). Called once ``stopping``
        is set: no batch goes to the background after that (see :meth:`_process`)."""
        while (background := self._background) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(background)
            if self._background is background:
                break
        await self.delivery.drain()

    async def _process(self, records: Sequence[Record], commit: Commit, overlap: bool) -> None:
        clock, observe = time.perf_counter, self._metrics.observe
        started = clock()
        self.stats.consumed += len(records)
        self.stats.batches += 1
        self._metrics.consumed.inc(len(records))
        self._metrics.batch_records.observe(len(records))
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(
            None,
            _parse_all,
            records,
            self._stream,
            self._kafka.dlq_topic,
            self.dead_letter_limit,
        )
        observe("parse", clock() - started)
        # The batch before this one reaches delivery first (or its halt is raised here).
        background = self._background
        if background is not None:
            await asyncio.shield(background)
            self._background = None
        failed = sum(1 for _, r in parsed.rejected if r.kind not in NOT_FAILED_VALIDATION)
        try:
            self._guard.check(len(records) - failed, failed)
        except DeadLetterFlood as exc:
            raise Halted(HaltReason.DEAD_LETTER_FLOOD, str(exc)) from exc
        if not overlap or self._stopping.is_set():
            # Once shutdown has begun, a batch is delivered and committed within this call:
            # the consumer is closed as soon as the handler returns, so a batch left in the
            # background then would be delivered but never committed, and read again.
            await self._finish(records, parsed, commit)
            return
        task = loop.create_task(self._finish_retrying(records, parsed, commit))
        task.add_done_callback(self._background_done)
        self._background = task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieved here; the next call raises it again
        if isinstance(error, Halted):
            self.delivery.halt(error)
            if self.on_halt is not None:
                self.on_halt(error)

    async def _finish_retrying(
        self, records: Sequence[Record], parsed: Parsed, commit: Commit
    ) -> None:
        """:meth:`_finish` in the background, retried after an unexpected error (as the
        runtime retries a batch in hand, without reading it again)."""
        stream = self._stream
        backoff = Backoff(
            stream.retry_initial_backoff_s, stream.retry_max_backoff_s, self._stopping
        )
        while True:
            try:
                await self._finish(records, parsed, commit)
                return
            except Halted:
                raise
            except Exception as exc:
                attempt = backoff.attempts + 1
                self.stats.retries += 1
                self._metrics.retries.labels("batch").inc()
                log.error(
                    "batch of %d records failed (attempt %d of %d); retrying it",
                    len(records),
                    attempt,
                    stream.max_batch_attempts,
                    exc_info=exc,
                    extra={"event": "retry", "stage": "batch", "attempt": attempt},
                )
                if attempt >= stream.max_batch_attempts:
                    raise Halted(
                        HaltReason.REPEATED_FAILURE,
                        f"the batch starting at {describe_first_offsets(records)} failed "
                        f"{attempt} times in a row; last error: {exc!r}",
                    ) from exc
                if not await backoff.wait():
                    raise Halted(
                        HaltReason.STOPPING, "stopping while a batch was being retried"
                    ) from exc

    async def _finish(self, records: Sequence[Record], parsed: Parsed, commit: Commit) -> None:
        """Score a parsed batch and hand its outputs to delivery."""
        clock, observe = time.perf_counter, self._metrics.observe
        rejected = parsed.rejected
        parse_done = clock()
        scored = await self._score(parsed.events, parsed.times)
        scored_sources = parsed.sources if scored.main is not None else []
        observe("score", clock() - parse_done)
        outputs, sources = _outputs(
            scored, parsed, self._kafka.output_topic, self._challenger_topic
        )
        self._log_rejections(records, rejected)
        sending = clock()
        await self.delivery.deliver(
            Batch(outputs, sources, *_offsets(records)),
            commit,
            on_acked=lambda delivered=None: self._acknowledged(scored_sources, rejected, delivered),
        )
        observe("send", clock() - sending)

    def _acknowledged(
        self,
        scored_sources: Sequence[TopicPartition],
        rejected: Sequence[tuple[Record, Rejection]],
        delivered: Collection[TopicPartition] | None,
    ) -> None:
        """Count what was delivered: every event and dead letter of the batch, or those of
        the ``delivered`` input partitions."""
        if delivered is not None:
            scored_sources = [tp for tp in scored_sources if tp in delivered]
            rejected = [
                (record, rejection)
                for record, rejection in rejected
                if TopicPartition(record.topic, record.partition) in delivered
            ]
        scored = len(scored_sources)
        self.stats.scored += scored
        self._metrics.scored.inc(scored)
        for _, rejection in rejected:
            kind = rejection.kind.value
            self.stats.dead_lettered[kind] = self.stats.dead_lettered.get(kind, 0) + 1
            self._metrics.dead_lettered.labels(kind).inc()

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

    async def _score(self, events: list[InputEvent], times: list[datetime | None]) -> Scored:
        stream = self._stream
        backoff = Backoff(
            stream.retry_initial_backoff_s, stream.retry_max_backoff_s, self._stopping
        )
        while True:
            try:
                return await self.pipeline.score_all(events, times, eager=False)
            except (EnrichmentUnavailable, ScoringTimeout) as exc:
                self.stats.retries += 1
                self._metrics.retries.labels("score").inc()
                log.warning(
                    "scoring failed, will retry (attempt %d): %s",
                    backoff.attempts + 1,
                    exc,
                    extra={"event": "retry", "stage": "score", "attempt": backoff.attempts + 1},
                )
                if not await backoff.wait():
                    raise Halted(
                        HaltReason.STOPPING, "stopping while scoring was being retried"
                    ) from exc


def describe_first_offsets(records: Sequence[Record]) -> str:
    """``topic[partition]@offset`` of each partition's first record, for messages."""
    first: dict[tuple[str, int], int] = {}
    for record in records:
        first.setdefault((record.topic, record.partition), record.offset)
    return ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(first.items()))


def _offsets(
    records: Sequence[Record],
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Per partition: the batch's first offset (where to rewind) and the offset after its last
    record (what a commit stores)."""
    first: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offset = record.offset
        if key not in first:
            first[key] = last[key] = offset
        elif offset > last[key]:
            last[key] = offset
    return (
        {TopicPartition(*key): offset for key, offset in first.items()},
        {TopicPartition(*key): offset + 1 for key, offset in last.items()},
    )
