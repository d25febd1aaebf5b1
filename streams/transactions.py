"""Exactly-once delivery: each input partition's share of a batch — its predictions, dead
letters and next offset — in one Kafka transaction.

Zombie fencing with aiokafka's transaction requests (which carry no consumer-group generation,
KIP-447's fencing): one transactional producer per *input partition*, with the transactional id
``<prefix>-<topic>-<partition>`` (the scheme Kafka Streams used before KIP-447). Whoever is
assigned a partition starts its producer first, which fences every older producer of that id
(a process that lost the partition can no longer commit anything for it), and only then reads
the partition's committed offset. A rebalance waits for the open transaction before the
partitions are released.

A producer is started only when the group assigns its partition (:meth:`on_assigned`), never
to recover from an error: a process paused past its session timeout does not know yet that it
lost a partition, and a producer it started then would fence the partition's new owner. A
fenced or broken producer instead gives the partition up and asks the group for a new
assignment; the partition's producer is started again only if the group assigns it here again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordTooLargeError,
)
from aiokafka.structs import TopicPartition

from settings import Settings
from streams.dead_letters import largest_dead_letter
from streams.delivery_types import Acked, Batch, Commit, DeliveryStats, Observe, Output
from streams.halts import Halted, HaltReason, HaltState
from streams.kafka_options import client_options, record_batch_bytes
from streams.outputs import ProducerOutputs
from streams.partitioner import KeyHashPartitioner
from streams.refusals import refused_setting

log = logging.getLogger(__name__)


class TransactionAborted(Exception):
    """Some partitions' transactions were aborted: read them again from ``rewind``.

    Partitions whose transactions committed are not in ``rewind``: their outputs and offsets
    are in Kafka, and reading them again would repeat them.
    """

    def __init__(
        self,
        rewind: dict[TopicPartition, int],
        cause: BaseException,
        *,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(f"transaction aborted for {sorted(rewind)}: {cause!r}")
        self.rewind = rewind
        self.cause = cause
        self.retriable = (
            retriable
            if retriable is not None
            else not isinstance(cause, KafkaError)
            or bool(cause.retriable)
            or isinstance(cause, ProducerFenced | OutOfOrderSequenceNumber)
        )


class PartitionProducers:
    """The transactional producers of the input partitions this process is assigned."""

    def __init__(self, settings: Settings) -> None:
        kafka = settings.kafka
        self._prefix = kafka.transactional_id_prefix or f"streamscore-{kafka.group_id}"
        self._settings = settings
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._outputs: dict[TopicPartition, ProducerOutputs] = {}
        self._partitioner = KeyHashPartitioner()

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self._prefix}-{tp.topic}-{tp.partition}"

    def get(self, tp: TopicPartition) -> AIOKafkaProducer | None:
        return self._producers.get(tp)

    def outputs(self, tp: TopicPartition) -> ProducerOutputs | None:
        """Sends through the producer of ``tp`` as record batches (as at-least-once does)."""
        return self._outputs.get(tp)

    async def start(self, tps: Iterable[TopicPartition]) -> None:
        """Start (and so fence every older owner of) the producers of ``tps``."""
        kafka = self._settings.kafka
        for tp in tps:
            if tp in self._producers:
                continue
            producer = AIOKafkaProducer(
                client_id=f"{kafka.client_id}-{tp.partition}",
                transactional_id=self.transactional_id(tp),
                transaction_timeout_ms=kafka.transaction_timeout_ms,
                acks="all",
                enable_idempotence=True,
                linger_ms=kafka.linger_ms,
                compression_type=kafka.compression_type,
                max_request_size=kafka.max_request_size,
                partitioner=self._partitioner,
                max_batch_size=record_batch_bytes(kafka),
                **client_options(kafka),
            )
            try:
                await producer.start()  # InitProducerId: bumps the epoch, fences older ones
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()  # its connections, not left to the collector
                raise
            self._producers[tp] = producer
            self._outputs[tp] = ProducerOutputs(producer, self._partitioner)

    async def stop_all(self) -> None:
        await self.stop(list(self._producers))

    async def stop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in list(tps):
            producer = self._producers.pop(tp, None)
            self._outputs.pop(tp, None)
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()


class TransactionalDelivery(HaltState):
    """Exactly-once. :meth:`deliver` guarantees:

    1. For each input partition of the batch, its outputs and its next offset are committed
       in one transaction: a ``read_committed`` reader sees all of them or none, and the group
       resumes after exactly the records whose outputs are visible.
    2. A failure aborts that partition's transaction and raises :class:`TransactionAborted`
       naming the partitions to read again (from the batch's first offsets); partitions whose
       transactions committed are not read again.
    3. A partition this process no longer owns gets nothing committed (its new owner reads it).
    4. :meth:`on_assigned` starts the partitions' producers (fencing any older owner) before
       reading their committed offsets; :meth:`on_revoked` waits for the open transaction,
       then closes the revoked partitions' producers.
    5. Batches are delivered one at a time (no pipelining): :meth:`drain` returns at once
       after the last :meth:`deliver` returned.
    6. A producer is started only by :meth:`on_assigned`. One that is fenced, cannot abort or
       cannot start gives its partition up: nothing more is committed for it until the group
       assigns it here again, which it is asked for at once (see the module).
    7. Nothing is committed for a partition from a batch fetched before its latest assignment
       (aiokafka rebalances in the background, also while a batch waits on MongoDB): the
       partition is read again from its committed offset instead.
    """

    def __init__(
        self, settings: Settings, stopping: asyncio.Event, observe: Observe | None = None
    ) -> None:
        self._group = settings.kafka.group_id
        self._dlq_topic = settings.kafka.dlq_topic
        self.on_dead_letter_too_large: Callable[[int], bool] | None = None
        """Told the size of a dead letter Kafka refused as too large; whether later dead
        letters will be cut smaller (then reading the batch again can succeed)."""
        self._producers = PartitionProducers(settings)
        self._stopping = stopping
        self._observe = observe
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._consumer: Any = None
        """The consumer of the latest assignment (asked to rejoin when a partition is given
        up)."""
        self.halted: Halted | None = None
        self.stats = DeliveryStats()
        self.fetched_at: int | None = None
        """When the batch being delivered was fetched, by the fetch guard's rebalance count
        (the runtime sets it per batch; None: unknown, as with the in-memory broker)."""
        self._assigned_at: dict[TopicPartition, int] = {}
        """Per partition, the fetch guard's rebalance count at its latest assignment."""

    async def deliver(self, batch: Batch, commit: Commit, on_acked: Acked | None = None) -> None:
        self.check()
        async with self._lock:
            started = time.perf_counter()
            by_partition: dict[TopicPartition, list[Output]] = {tp: [] for tp in batch.after}
            for output, source in zip(batch.outputs, batch.sources, strict=True):
                by_partition[source].append(output)
            partitions = list(by_partition)
            results = await asyncio.gather(
                *(self._commit(tp, by_partition[tp], batch.after[tp]) for tp in partitions),
                return_exceptions=True,
            )
            failed = {
                tp: result
                for tp, result in zip(partitions, results, strict=True)
                if isinstance(result, BaseException)
            }
            if self._observe is not None:
                self._observe("commit", time.perf_counter() - started)
            if failed:
                self.stats.commit_failures += 1
                first_error = next(iter(failed.values()))
                assert isinstance(first_error, BaseException)
                raise TransactionAborted(
                    {tp: batch.first[tp] for tp in failed},
                    first_error,
                    retriable=True if self._cut_smaller(batch, failed.values()) else None,
                )
            self.stats.commits += 1
            if on_acked is not None:
                delivered = zip(partitions, results, strict=True)
                on_acked(frozenset(tp for tp, result in delivered if result is True))

    async def _commit(
        self, tp: TopicPartition, outputs: list[Output], after: int
    ) -> BaseException | bool:
        """One partition's transaction; returns the error that aborted it, True when it
        committed, False when nothing was to be committed here."""
        if self._fetched_before_assignment(tp):
            await self._read_again(tp)
            return False
        producer, sender = self._producers.get(tp), self._producers.outputs(tp)
        if producer is None or sender is None:
            if tp in self._assigned:  # its set-up failed: ask the group again (see the module)
                self._give_up(tp)
                return RuntimeError(f"the transactional producer of {tp} was not ready")
            log.warning("not committing %s: this process does not own it now", tp)
            return False
        try:
            await producer.begin_transaction()
            handed = await sender.send_many(outputs, range(len(outputs)))
            await asyncio.gather(*(future for future, _ in handed))
            await producer.send_offsets_to_transaction({tp: after}, self._group)
            await producer.commit_transaction()
        except Exception as exc:
            await self._abort(tp, producer, exc)
            return exc
        self.stats.committed[tp] = after
        return True

    def _cut_smaller(self, batch: Batch, errors: Iterable[BaseException]) -> bool:
        """Whether a refusal as too large will not come again: the batch held dead letters,
        and later ones will be cut smaller (see :attr:`on_dead_letter_too_large`)."""
        if self.on_dead_letter_too_large is None or not any(
            isinstance(e, MessageSizeTooLargeError | RecordTooLargeError) for e in errors
        ):
            return False
        size = largest_dead_letter(batch.outputs, self._dlq_topic)
        return size > 0 and self.on_dead_letter_too_large(size)

    def _fetched_before_assignment(self, tp: TopicPartition) -> bool:
        """Whether the batch's records of ``tp`` were fetched before its latest assignment (a
        rebalance while the batch was scored: the assignment read the committed offset
        afresh, so committing the batch now would repeat whatever is read from there)."""
        fetched, assigned = self.fetched_at, self._assigned_at.get(tp)
        return fetched is not None and assigned is not None and assigned > fetched

    async def _read_again(self, tp: TopicPartition) -> None:
        """Commit nothing of a batch fetched before ``tp``'s assignment; read ``tp`` again
        from its committed offset (the only position that is right whoever committed last)."""
        log.warning(
            "not committing %s: its records were fetched before its latest assignment; "
            "reading it again from the committed offset",
            tp,
            extra={"event": "retry", "stage": "transaction", "partition": tp.partition},
        )
        consumer = self._consumer
        if consumer is None or tp not in self._assigned:
            return
        committed = await consumer.committed(tp)
        if committed is not None:
            consumer.seek(tp, committed)

    async def _abort(self, tp: TopicPartition, producer: AIOKafkaProducer, exc: Exception) -> None:
        log.warning(
            "transaction for %s aborted, its records will be read again: %r",
            tp,
            exc,
            extra={"event": "retry", "stage": "transaction", "partition": tp.partition},
        )
        if isinstance(exc, ProducerFenced | OutOfOrderSequenceNumber):
            # Fenced: a newer producer of this partition exists. Out of order: a batch the
            # broker refused (too large) left a gap that aiokafka never recovers from. Either
            # way only a producer started by the next assignment can write for it.
            await self._producers.stop([tp])
            self._give_up(tp)
            return
        try:
            await producer.abort_transaction()
        except Exception:  # unusable: the next one is started by an assignment, not here
            await self._producers.stop([tp])
            self._give_up(tp)

    def _give_up(self, tp: TopicPartition) -> None:
        """Commit nothing more for ``tp`` until the group assigns it here again (its producer
        is started then, and its committed offset read), and ask the group for that now."""
        self._assigned.discard(tp)
        coordinator = getattr(self._consumer, "_coordinator", None)
        request_rejoin = getattr(coordinator, "request_rejoin", None)
        if request_rejoin is not None:
            request_rejoin()  # aiokafka: rejoin at the next heartbeat, then a new assignment
        log.warning(
            "gave up %s until the group assigns it again: its transactional producer was "
            "fenced or broken",
            tp,
            extra={"event": "rejoin", "partition": tp.partition},
        )

    async def drain(self) -> None:
        async with self._lock:
            return

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self._lock:  # the open transaction completes first
            tps = set(revoked)
            self._assigned -= tps
            await self._producers.stop(tps)

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: Iterable[Any]) -> None:
        self._consumer = consumer
        tps = list(assigned)
        self._assigned |= set(tps)
        guard = getattr(consumer, "guard", None)
        for tp in tps:
            self._assigned_at[tp] = getattr(guard, "rebalances", 0)
        try:
            await self._producers.start(tps)
        except Exception as exc:
            if refused_setting(exc):  # every assignment would meet it again: stop
                self._refused(guard, exc)
                return
            for tp in tps:  # not fenced: nothing of them may be committed from here
                if self._producers.get(tp) is None:
                    self._give_up(tp)
            raise
        for tp in tps:  # read committed offsets only now that older owners are fenced
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)

    def _refused(self, guard: Any, exc: Exception) -> None:
        """Kafka refused a setting of the transactional producers (aiokafka raises it from
        ``InitProducerId`` at each assignment): nothing is delivered or fetched any more, and
        the scorer stops with exit code 2 instead of rejoining the group again and again."""
        reason = f"Kafka refused a setting of the transactional producers: {exc!r}"
        self.halted = self.halted or Halted(HaltReason.REFUSED_SETTING, reason)
        if guard is not None and guard.halted is None:
            guard.halted = reason
            if guard.on_refused is not None:
                guard.on_refused(reason)

    async def close(self) -> None:
        await self._producers.stop_all()
