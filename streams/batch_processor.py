"""One consumed batch: parse, score, publish predictions and dead letters, then commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from schemas import InputEvent, Prediction
from scoring import EnrichmentUnavailable, ScoringPipeline, ScoringTimeout
from settings import Settings
from streams.backoff import Backoff
from streams.dead_letter_guard import DeadLetterFlood, DeadLetterGuard
from streams.dead_letters import dead_letter_headers
from streams.records import Rejection, parse_record

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[Any, Any]


class Publish(Protocol):
    """Send one record; the awaitable resolves once Kafka acknowledged it."""

    def __call__(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str] | None
    ) -> Awaitable[Awaitable[Any]]: ...


Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]


class StopRequested(Exception):
    """A shutdown arrived while the batch was waiting on a retry: nothing is committed."""


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


Output = tuple[str, bytes, bytes | None, dict[str, str] | None]


def _parse_all(
    records: Sequence[Record], max_bytes: int
) -> tuple[list[InputEvent], list[datetime | None], list[tuple[Record, Rejection]]]:
    events: list[InputEvent] = []
    times: list[datetime | None] = []
    rejected: list[tuple[Record, Rejection]] = []
    for record in records:
        parsed = parse_record(record.value, max_bytes)
        if isinstance(parsed, Rejection):
            rejected.append((record, parsed))
        else:
            events.append(parsed)
            times.append(
                datetime.fromtimestamp(record.timestamp / 1000, UTC)
                if record.timestamp is not None and record.timestamp >= 0
                else None
            )
    return events, times, rejected


def _outputs(
    predictions: Sequence[Prediction],
    rejected: Sequence[tuple[Record, Rejection]],
    output_topic: str,
    dlq_topic: str,
) -> list[Output]:
    """(topic, value, key, headers) of every prediction and dead letter of a batch."""
    outputs: list[Output] = [
        (output_topic, p.model_dump_json().encode(), p.entity_id.encode(), None)
        for p in predictions
    ]
    outputs.extend(
        (
            dlq_topic,
            record.value or b"",
            record.key if isinstance(record.key, bytes) else None,
            dead_letter_headers(record, rejection),
        )
        for record, rejection in rejected
    )
    return outputs


class BatchProcessor:
    """Processes one batch of records from the input topic.

    :meth:`process` guarantees:
    1. Every record becomes exactly one output: a prediction (valid event) or a dead letter
       (the original bytes, with headers naming the reason and the source position).
    2. A bad record never stops the batch: it is dead-lettered and the rest are scored.
    3. The batch's offsets are committed only after every prediction and dead letter of the
       batch has been acknowledged by Kafka (``acks=all``). If anything fails, nothing is
       committed: MongoDB outages and publish failures are retried with backoff until they
       succeed or a shutdown is requested (then the records are redelivered on restart).
    4. When too many recent records fail validation (a bad producer deploy) it raises
       :class:`DeadLetterFlood` before dead-lettering them.
    5. Once a batch was left uncommitted (stop or flood), every later call raises
       :class:`StopRequested`: nothing is ever committed past an unprocessed record.
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
            self.halted = str(exc)
            raise

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
            None, _parse_all, records, self._stream.max_record_bytes
        )
        self._guard.check(len(events), len(rejected))
        parse_done = clock()
        stages["parse"] += parse_done - started
        predictions = await self._score(events, times)
        scored = clock()
        stages["score"] += scored - parse_done
        outputs = await loop.run_in_executor(
            None, _outputs, predictions, rejected, self._kafka.output_topic, self._kafka.dlq_topic
        )
        await self._publish_all(outputs)
        published = clock()
        stages["publish"] += published - scored
        self.stats.scored += len(predictions)
        for _, rejection in rejected:
            kind = rejection.kind.value
            self.stats.dead_lettered[kind] = self.stats.dead_lettered.get(kind, 0) + 1
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
            "batch done: %d records, %d scored, %d dead-lettered",
            len(records),
            len(predictions),
            len(rejected),
            extra={"event": "batch", "records": len(records), "scored": len(predictions)},
        )
        await self._commit(records, commit)
        stages["commit"] += clock() - published

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

    async def _publish_all(self, outputs: list[Output]) -> None:
        """Send every output and wait for Kafka's acknowledgements; re-send only the ones that
        failed or were not acknowledged in time, with backoff, until all are acknowledged."""
        backoff = self._backoff()
        remaining = outputs
        while True:
            failed: list[Output] = []
            errors: list[BaseException] = []
            pending: dict[asyncio.Future[Any], int] = {}
            for index, output in enumerate(remaining):
                try:
                    pending[asyncio.ensure_future(await self._publish(*output))] = index
                except KafkaError as exc:
                    failed.append(output)
                    errors.append(exc)
            if pending:
                done, not_done = await asyncio.wait(pending, timeout=self._kafka.delivery_timeout_s)
                for future in not_done:
                    future.cancel()
                    failed.append(remaining[pending[future]])
                    errors.append(TimeoutError("not acknowledged in time"))
                for future in done:
                    error = future.exception()
                    if error is not None:
                        if not isinstance(error, KafkaError):
                            raise error
                        failed.append(remaining[pending[future]])
                        errors.append(error)
            if not failed:
                return
            self.stats.retries += 1
            log.warning(
                "%d of %d outputs were not acknowledged, will re-send them (attempt %d): %r",
                len(failed),
                len(remaining),
                backoff.attempts + 1,
                errors[0],
                extra={"event": "retry", "stage": "publish", "attempt": backoff.attempts + 1},
            )
            if not await backoff.wait():
                raise StopRequested("stopping while publishing was being retried")
            remaining = failed

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
