"""The running scorer: what it opens at start, how it handles a consumed batch, what it closes
at stop. :mod:`streams.app` wires this into FastStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from confluent_kafka import TopicPartition as LibrdkafkaPartition
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from scoring.model_reload import ModelReloader
from scoring.service import (
    STREAM_SWITCH_INTERVAL_MS,
    PipelineFactory,
    ScoringService,
    open_scoring,
)
from settings import KafkaSettings, Settings
from streams.backoff import Backoff
from streams.batch_processor import BatchProcessor, describe_first_offsets
from streams.delivery import Delivery, DeliveryPolicy
from streams.delivery_types import BatchDelivery, Commit
from streams.exit_codes import ExitCode
from streams.fetch_guard import FetchGuard, GuardedKafkaBroker
from streams.halts import Halted
from streams.librdkafka_consumer import GuardedConfluentBroker, GuardedConfluentConsumer
from streams.librdkafka_transactions import LibrdkafkaTransactionalDelivery
from streams.metrics import ConsumerLag, StreamMetrics, serve_metrics
from streams.outputs import OutputsFactory
from streams.topics import (
    RECORD_BATCH_OVERHEAD,
    ensure_topics,
    list_topics,
    record_limits,
    scorer_topics,
)
from streams.transactions import TransactionAborted, TransactionalDelivery
from telemetry.background import BackgroundTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """What exists between start and stop."""

    scoring: ScoringService
    processor: BatchProcessor


LOWEST_REQUEST_LIMIT = 1_000
"""The lowest ``message.max.bytes`` librdkafka accepts."""


async def within_topic_limits(settings: Settings) -> Settings:
    """``settings`` with the producer's request limit (``max_request_size``, which also bounds
    its record batches and the dead letters cut to fit) lowered to the smallest limit of the
    topics it writes, when one is lower: the broker refuses a whole record batch larger than
    its topic's ``max.message.bytes``, and aiokafka's idempotent producer cannot write to that
    partition again after such a refusal."""
    kafka = settings.kafka
    written = scorer_topics(settings)[1:]
    limits = await record_limits(kafka, written)
    lowest = min(limits.items(), key=lambda item: item[1], default=None)
    if lowest is None or lowest[1] >= kafka.max_request_size:
        return settings  # the default topic limit (1 MiB + 12) is above the producer's
    # librdkafka takes no message.max.bytes below 1000: a topic that takes less is written
    # to as if it took 1000, and its broker refuses what does not fit.
    topic, limit = lowest[0], max(LOWEST_REQUEST_LIMIT, lowest[1] - RECORD_BATCH_OVERHEAD)
    if limit >= kafka.max_request_size:
        return settings
    log.info(
        "records and record batches are kept to %d bytes, the limit of topic %s "
        "(max.message.bytes), below STREAMSCORE_KAFKA__MAX_REQUEST_SIZE (%d)",
        limit,
        topic,
        kafka.max_request_size,
        extra={"event": "topic_limit", "topic": topic},
    )
    lowered = kafka.model_copy(update={"max_request_size": limit})
    return settings.model_copy(update={"kafka": lowered})


class StreamRuntime:
    """One scorer process's state. Everything it opens in :meth:`start` it closes in
    :meth:`close`; the CLI, the metrics endpoint and tests read it."""

    def __init__(
        self,
        settings: Settings,
        pipeline_factory: PipelineFactory,
        outputs_factory: OutputsFactory,
        exit_app: Callable[[], None],
    ) -> None:
        self.settings = settings
        self._pipeline_factory = pipeline_factory
        self._outputs_factory = outputs_factory
        self._exit_app = exit_app
        self.stopping = asyncio.Event()
        self.exit_code: ExitCode = ExitCode.OK
        self.failed_attempts = 0
        """Consecutive unexpected failures of the batch at the head of the stream."""
        self.transaction_retries = 0
        """Consecutive aborted transactions (exactly-once) waiting on a retriable error."""
        self.delivery: BatchDelivery | None = None
        self.consumer: AIOKafkaConsumer | GuardedConfluentConsumer | None = None
        self.registry = CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self.registry.register(ConsumerLag(self._lag_positions))
        stream = settings.stream
        self.fetch_guard = FetchGuard(
            max_attempts=stream.max_fetch_attempts,
            initial_backoff_s=stream.retry_initial_backoff_s,
            max_backoff_s=stream.retry_max_backoff_s,
            on_unreadable=lambda reason: self.halt(ExitCode.UNREADABLE_RECORD, reason),
            on_failure=self.metrics.retries.labels("fetch").inc,
            on_refused=lambda reason: self.halt(ExitCode.CONFIGURATION, reason),
        )
        self.started: Started | None = None
        self._overlap = False
        """Whether batches are scored in the background (:meth:`start` decides)."""
        self._resources = AsyncExitStack()
        self._metrics_server: Any = None
        self._group_positions: dict[TopicPartition, tuple[int, int]] = {}
        """Per assigned partition, as the broker says: where the group stands (its committed
        offset, else where ``auto_offset_reset`` starts a reader) and the end offset, for
        the lag gauge: refreshed every :data:`LAG_REFRESH_S` by :attr:`_lag_refresh`."""
        self._lag_refresh = BackgroundTask(self._refresh_group_positions)

    @property
    def processor(self) -> BatchProcessor | None:
        return self.started.processor if self.started else None

    @property
    def reloader(self) -> ModelReloader | None:
        return self.started.scoring.reloader if self.started else None

    def halt(self, code: ExitCode, reason: str) -> None:
        """Stop the process with ``code``: nothing more is fetched or committed."""
        log.critical("halting: %s", reason, extra={"event": "halt", "exit_code": int(code)})
        if self.exit_code == ExitCode.OK:
            self.exit_code = code
        self.stopping.set()
        self._exit_app()

    async def start(self, broker: KafkaBroker | ConfluentBroker) -> None:
        settings, kafka = self.settings, self.settings.kafka
        if kafka.create_topics and (created := await ensure_topics(kafka, scorer_topics(settings))):
            log.info("created topics: %s", ", ".join(created))
        if isinstance(broker, GuardedKafkaBroker | GuardedConfluentBroker):  # a real cluster
            if not kafka.create_topics:
                await _wait_for_topics(kafka, scorer_topics(settings))
            self.settings = settings = await within_topic_limits(settings)
            kafka = settings.kafka
        scoring = await self._resources.enter_async_context(
            open_scoring(
                settings,
                pipeline_factory=self._pipeline_factory,
                registry=self.registry,
                switch_interval_ms=STREAM_SWITCH_INTERVAL_MS,
            )
        )
        delivery = await self._open_delivery(broker)
        self.delivery = delivery
        processor = BatchProcessor(
            scoring.pipeline, delivery, settings, self.stopping, self.metrics
        )
        processor.on_halt = self._halted_in_background
        if isinstance(delivery, TransactionalDelivery | LibrdkafkaTransactionalDelivery):
            delivery.on_dead_letter_too_large = processor.dead_letters_refused_as_too_large
        self._overlap = (
            settings.stream.overlap_batches and settings.stream.delivery == "at_least_once"
        )
        self.started = Started(scoring, processor)
        self._serve_metrics()
        self._lag_refresh.start()
        model = scoring.pipeline.model
        log.info(
            "scorer ready: model %s:%s (%d features), consuming %s as group %s with %s",
            model.name,
            model.version,
            len(model.feature_names),
            kafka.input_topic,
            kafka.group_id,
            kafka.client,
            extra={
                "event": "ready",
                "model_version": model.version,
                "topic": kafka.input_topic,
                "group": kafka.group_id,
                "client": kafka.client,
            },
        )

    async def _open_delivery(self, broker: KafkaBroker | ConfluentBroker) -> BatchDelivery:
        """At-least-once through the outputs strategy; exactly-once through one transactional
        producer per input partition (aiokafka, hooked into the consumer's rebalances) or one
        per process with the group's metadata in each transaction (librdkafka, KIP-447)."""
        settings, kafka = self.settings, self.settings.kafka
        if settings.stream.delivery == "exactly_once" and kafka.client == "confluent":
            librdkafka = LibrdkafkaTransactionalDelivery(
                settings, self.stopping, self.metrics.observe
            )
            self._resources.push_async_callback(librdkafka.close)
            await librdkafka.open()
            return librdkafka
        if settings.stream.delivery == "exactly_once":
            transactional = TransactionalDelivery(settings, self.stopping, self.metrics.observe)
            self._resources.push_async_callback(transactional.close)
            self.fetch_guard.on_revoked = transactional.on_revoked
            self.fetch_guard.on_assigned = transactional.on_assigned
            return transactional
        outputs = await self._resources.enter_async_context(self._outputs_factory(settings, broker))
        delivery = Delivery(
            outputs,
            DeliveryPolicy(
                dlq_topic=kafka.dlq_topic,
                ack_timeout_s=kafka.delivery_timeout_s,
                max_attempts=settings.stream.max_batch_attempts,
                initial_backoff_s=settings.stream.retry_initial_backoff_s,
                max_backoff_s=settings.stream.retry_max_backoff_s,
            ),
            self.stopping,
            observe=self.metrics.observe,
        )
        delivery.on_halt = self._halted_in_background
        return delivery

    def _serve_metrics(self) -> None:
        stream = self.settings.stream
        if stream.metrics_port is None:
            return
        try:
            self._metrics_server = serve_metrics(
                self.registry, stream.metrics_host, stream.metrics_port
            )
        except OSError as exc:
            # Another scorer on this machine holds the port: keep scoring, say so loudly.
            log.warning(
                "metrics endpoint disabled: cannot listen on %s:%s (%s); set "
                "STREAMSCORE_STREAM__METRICS_PORT to a free port for this process",
                stream.metrics_host,
                stream.metrics_port,
                exc,
                extra={"event": "metrics_disabled"},
            )

    def _lag_positions(self) -> Iterator[tuple[TopicPartition, int, int]]:
        """(partition, end, committed) per assigned partition. Committed is the later of this
        process's own last commit and the group's offset as the broker last said: the first
        is current between refreshes, the second covers a batch that never committed (a
        scorer stuck on MongoDB shows its lag) and a partition that came back after another
        process committed it further (no stale lag)."""
        consumer, processor = self.consumer, self.processor
        if consumer is None or processor is None:
            return
        ours, group = processor.stats.committed, self._group_positions
        for tp in sorted(consumer.assignment(), key=lambda t: (t.topic, t.partition)):
            # The consumer's own end offset stops moving while a batch waits (it fetches no
            # more): the broker's, refreshed, is used when it is further.
            broker_done, broker_end = group.get(tp, (-1, -1))
            done, highwater = max(ours.get(tp, -1), broker_done), consumer.highwater(tp)
            end = max(highwater if highwater is not None else -1, broker_end)
            if end >= 0 and done >= 0:
                yield tp, end, done

    async def _refresh_group_positions(self) -> None:
        while True:
            consumer = self.consumer
            if consumer is not None:
                try:
                    self._group_positions = await group_positions(
                        consumer, self.settings.kafka.auto_offset_reset
                    )
                except Exception as exc:  # Kafka away: the gauge keeps its last values
                    log.debug("cannot read the group's offsets for the lag gauge: %r", exc)
            await asyncio.sleep(LAG_REFRESH_S)

    async def drain(self) -> None:
        """Shutting down: outputs already sent are acknowledged and committed first."""
        self.stopping.set()
        # Before FastStream closes the consumer: the refresh calls it from another thread.
        await self._lag_refresh.stop()
        if self.processor is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.processor.drain(), self.settings.stream.shutdown_timeout_s
                )

    async def close(self) -> None:
        """Close what :meth:`start` opened (what it counted stays readable)."""
        await self._lag_refresh.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        with contextlib.suppress(Exception):
            await self._resources.aclose()

    async def handle(self, records: tuple[Any, ...], consumer: Any, ack: Any, nack: Any) -> None:
        """One consumed batch. Guarantees:

        1. A batch that halts (shutdown during a retry, an earlier batch failed, a flood, an
           output Kafka keeps refusing) is rewound and never committed; unless shutting down,
           the process stops with the halt's exit code, so a restart re-reads it.
        2. An unexpected error rewinds the batch and retries it with a backoff that grows
           across attempts; after ``max_batch_attempts`` in a row the process stops
           (:attr:`ExitCode.REPEATED_FAILURE`). Nothing is ever committed past it.
        """
        started = self.started
        if started is None:
            await nack()
            return
        commit: Commit
        overlap = self._overlap
        if isinstance(consumer, AIOKafkaConsumer):
            self.consumer = consumer
            commit = consumer.commit
            if isinstance(self.delivery, TransactionalDelivery):
                self.delivery.fetched_at = getattr(consumer, "fetched_at", None)
        elif isinstance(consumer, GuardedConfluentConsumer):
            self.consumer = consumer
            commit = consumer.commit_offsets
            if isinstance(self.delivery, LibrdkafkaTransactionalDelivery):
                self.delivery.consumer = consumer
        else:  # FastStream's in-memory consumer: acknowledging the message is the commit
            overlap = False  # the message is acknowledged within this call

            async def commit(_offsets: dict[TopicPartition, int]) -> None:
                await ack()

        try:
            await started.processor.process(records, commit, overlap=overlap)
            self.failed_attempts = self.transaction_retries = 0
        except Halted as exc:
            log.warning("%s: %d records left uncommitted for redelivery", exc, len(records))
            await nack()
            if not self.stopping.is_set():
                self.halt(exc.exit_code, str(exc))
        except TransactionAborted as exc:
            # Only the partitions whose transactions were aborted are read again.
            if isinstance(consumer, AIOKafkaConsumer):
                assigned = consumer.assignment()
                for tp, offset in exc.rewind.items():
                    if tp in assigned:
                        consumer.seek(tp, offset)
            elif isinstance(consumer, GuardedConfluentConsumer):
                assigned = consumer.assignment()
                for tp, offset in exc.rewind.items():
                    if tp in assigned:
                        await consumer.seek(tp.topic, tp.partition, offset)
            if exc.retriable:
                await self._back_off(attempts=self._next_transaction_attempt())
            else:
                await self._retry_later(records, exc)
        except Exception as exc:
            await nack()
            await self._retry_later(records, exc)

    def _halted_in_background(self, exc: Halted) -> None:
        """The batch scored in the background halted: stop now, as for the batch in hand."""
        log.warning("%s: the batch in the background is left uncommitted for redelivery", exc)
        if not self.stopping.is_set():
            self.halt(exc.exit_code, str(exc))

    async def _retry_later(self, records: tuple[Any, ...], exc: Exception) -> None:
        self.failed_attempts += 1
        attempts, limit = self.failed_attempts, self.settings.stream.max_batch_attempts
        log.error(
            "batch of %d records failed (attempt %d of %d); rewound to retry it",
            len(records),
            attempts,
            limit,
            exc_info=exc,
            extra={"event": "retry", "stage": "batch", "attempt": attempts},
        )
        self.metrics.retries.labels("batch").inc()
        if self.processor is not None:
            self.processor.stats.retries += 1
        if attempts >= limit:
            self.halt(
                ExitCode.REPEATED_FAILURE,
                f"the batch starting at {describe_first_offsets(records)} failed {attempts} times "
                f"in a row; last error: {exc!r}",
            )
            return
        await self._back_off(attempts)

    def _next_transaction_attempt(self) -> int:
        self.transaction_retries += 1
        self.metrics.retries.labels("transaction").inc()
        return self.transaction_retries

    async def _back_off(self, attempts: int) -> None:
        stream = self.settings.stream
        await Backoff(
            stream.retry_initial_backoff_s,
            stream.retry_max_backoff_s,
            self.stopping,
            attempts=max(0, attempts - 1),
        ).wait()


LAG_REFRESH_S = 5.0

TOPICS_WAIT_S = 2.0
TOPICS_SAY_EVERY_S = 30.0


async def _wait_for_topics(kafka: KafkaSettings, topics: list[str]) -> None:
    """With ``STREAMSCORE_KAFKA__CREATE_TOPICS=false``, start consuming only once every topic
    the scorer reads or writes exists (another job may be creating them): nothing is read
    that could not be answered, and the wait is said plainly, every
    :data:`TOPICS_SAY_EVERY_S`, instead of the client's metadata complaints."""
    said_at: float | None = None
    while missing := sorted(set(topics) - await list_topics(kafka)):
        now = time.monotonic()
        if said_at is None or now - said_at >= TOPICS_SAY_EVERY_S:
            said_at = now
            log.warning(
                "waiting for topics %s: they do not exist and STREAMSCORE_KAFKA__CREATE_TOPICS "
                "is false (create them, or set it to true)",
                ", ".join(missing),
                extra={"event": "topics_missing", "topics": missing},
            )
        await asyncio.sleep(TOPICS_WAIT_S)
    if said_at is not None:
        log.info("topics %s exist now", ", ".join(topics))


async def group_positions(
    consumer: AIOKafkaConsumer | GuardedConfluentConsumer, reset: str
) -> dict[TopicPartition, tuple[int, int]]:
    """(committed, end) of each partition ``consumer`` is assigned, from the broker: the
    group's committed offset (for a partition the group never committed, where a reader
    starts: the log start or end offset, as ``reset`` says) and the end offset."""
    if isinstance(consumer, GuardedConfluentConsumer):
        return await asyncio.to_thread(_librdkafka_positions, consumer, reset)
    assigned = list(consumer.assignment())
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    positions: dict[TopicPartition, tuple[int, int]] = {}
    for tp in assigned:
        committed = await consumer.committed(tp)
        if committed is None:
            committed = (
                (await consumer.beginning_offsets([tp]))[tp] if reset == "earliest" else ends[tp]
            )
        positions[tp] = (int(committed), int(ends[tp]))
    return positions


def _librdkafka_positions(
    consumer: GuardedConfluentConsumer, reset: str
) -> dict[TopicPartition, tuple[int, int]]:
    client = consumer.consumer
    asked = [LibrdkafkaPartition(tp.topic, tp.partition) for tp in consumer.assignment()]
    positions: dict[TopicPartition, tuple[int, int]] = {}
    for part in client.committed(asked, timeout=10.0) if asked else ():
        if part.error is not None:
            continue
        low, high = client.get_watermark_offsets(part, timeout=10.0)
        offset = part.offset
        if offset < 0:  # never committed
            offset = low if reset == "earliest" else high
        positions[TopicPartition(part.topic, part.partition)] = (int(offset), int(high))
    return positions
