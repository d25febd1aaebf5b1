"""Exactly-once through librdkafka (``STREAMSCORE_KAFKA__CLIENT=confluent``): a whole batch —
its predictions, dead letters and next offsets — in one Kafka transaction.

Fencing is KIP-447's: the offsets go into the transaction with the consumer's group metadata
(generation and member id), so the group coordinator refuses them from a process that lost
its partitions in a rebalance, and the transaction is aborted. One transactional producer per
process is enough. Its transactional id is ``<prefix>-<host name>-<client id>``, the same
when the process is started again: the new producer's ``init_transactions`` aborts a
transaction the old one left open (killed with ``kill -9``), so ``read_committed`` readers of
the output topics never wait for it to time out. Two live processes must not share an id
(``--workers`` gives each worker its own client id): a producer fenced by another one with its
id halts the process (exit code 2) instead of fencing it back.

Polls and rebalances happen only between batches here (a batch is delivered inside the
handler, before the next poll), so a rebalance never meets an open transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException, Producer
from confluent_kafka import TopicPartition as LibrdkafkaPartition

from settings import Settings
from streams.dead_letters import largest_dead_letter
from streams.delivery_types import Acked, Batch, Commit, DeliveryStats, Observe, Unacknowledged
from streams.halts import Halted, HaltReason, HaltState
from streams.librdkafka_errors import consequential, to_kafka_error
from streams.librdkafka_options import producer_config
from streams.librdkafka_outputs import LibrdkafkaOutputs
from streams.transactions import TransactionAborted

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_S = 0.1
_HANG_GRACE_S = 10.0
"""A transactional call still blocked this long after its own timeout is taken as hung."""
_FENCED_CODES = {
    LibrdkafkaError._FENCED,
    LibrdkafkaError.PRODUCER_FENCED,
    LibrdkafkaError.INVALID_PRODUCER_EPOCH,
}


class CallHung(Exception):
    """A librdkafka transactional call did not return within its own timeout: librdkafka can
    block in ``send_offsets_to_transaction`` past it after a broker restart (its issues 5456
    and 5511). The producer is given up (not closed: its call still holds it) and a new one
    with the same transactional id fences it and aborts its transaction."""


def transactional_id(settings: Settings) -> str:
    """``<prefix>-<host name>-<client id>``: stable across restarts of one process, distinct
    between machines and between ``--workers`` siblings (each has its own client id)."""
    kafka = settings.kafka
    prefix = kafka.transactional_id_prefix or f"streamscore-{kafka.group_id}"
    return f"{prefix}-{socket.gethostname()}-{kafka.client_id}"


def transactional_config(settings: Settings, transactional_id: str) -> dict[str, Any]:
    """The producer's settings plus a transaction: a delivery may not outlast the
    transaction (librdkafka refuses ``message.timeout.ms`` > ``transaction.timeout.ms``)."""
    kafka = settings.kafka
    config = producer_config(kafka)
    config["transactional.id"] = transactional_id
    config["transaction.timeout.ms"] = kafka.transaction_timeout_ms
    config["delivery.timeout.ms"] = min(config["delivery.timeout.ms"], kafka.transaction_timeout_ms)
    # librdkafka also refuses socket.timeout.ms > transaction.timeout.ms + 100.
    config["socket.timeout.ms"] = min(
        config["socket.timeout.ms"], kafka.transaction_timeout_ms + 100
    )
    return config


class LibrdkafkaTransactionalDelivery(HaltState):
    """Exactly-once on librdkafka. :meth:`deliver` guarantees:

    1. A batch's outputs and the next offsets of all its input partitions are committed in one
       transaction: a ``read_committed`` reader sees all of them or none, and the group
       resumes after exactly the records whose outputs are visible.
    2. A failure aborts the transaction and raises :class:`TransactionAborted` naming every
       partition of the batch (from its first offsets) to read again; a process that lost the
       partitions gets its offsets refused by the group coordinator, so nothing of them commits.
    3. A producer that cannot go on (fatal error, failed abort, a call that hung past its
       timeout) is replaced by a new one with the same transactional id, which fences it and
       aborts its transaction, before the batch is read again.
    4. Batches are delivered one at a time: :meth:`drain` returns once the last one is done.
    """

    def __init__(
        self,
        settings: Settings,
        stopping: asyncio.Event,
        observe: Observe | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        kafka = settings.kafka
        self._settings = settings
        self._timeout_s = kafka.transaction_timeout_ms / 1000
        self._stopping = stopping
        self._observe = observe
        self._factory = producer_factory
        """Builds the producer from its configuration (None: confluent-kafka's ``Producer``)."""
        self._lock = asyncio.Lock()
        self._producer: Any = None
        self._outputs: LibrdkafkaOutputs | None = None
        self._ready = False
        """Whether the producer's ``init_transactions`` succeeded (a Kafka outage can leave a
        new producer without it: it is replaced before the next batch)."""
        self.transactional_id = ""
        self.consumer: Any = None
        """The consuming :class:`~streams.librdkafka_consumer.GuardedConfluentConsumer` (the
        runtime sets it); its group metadata goes into each transaction."""
        self.halted: Halted | None = None
        self.stats = DeliveryStats()
        self.on_dead_letter_too_large: Callable[[int], bool] | None = None
        """Told the size of a dead letter Kafka refused as too large; whether later dead
        letters will be cut smaller (then reading the batch again can succeed)."""

    async def open(self) -> None:
        """Start a producer and register its transactional id (``init_transactions``)."""
        self.transactional_id = transactional_id(self._settings)
        factory = self._factory if self._factory is not None else Producer
        producer = factory(transactional_config(self._settings, self.transactional_id))
        self._producer = producer
        self._outputs = LibrdkafkaOutputs(producer, asyncio.get_running_loop())
        self._ready = False
        await self._call(producer.init_transactions, self._timeout_s)
        self._ready = True
        log.info(
            "exactly-once: transactional producer %s ready",
            self.transactional_id,
            extra={"event": "transactions_ready", "transactional_id": self.transactional_id},
        )

    async def deliver(self, batch: Batch, commit: Commit, on_acked: Acked | None = None) -> None:
        self.check()
        async with self._lock:
            started = time.perf_counter()
            try:
                if not self._ready:
                    await self._replace()
                await self._transact(batch)
            except BaseException as exc:
                self.stats.commit_failures += 1
                retriable = await self._abort(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                cause = _kafka_error(exc)
                if isinstance(cause, MessageSizeTooLargeError) and self._cut_smaller(batch):
                    retriable = True
                rewind = await self._committed_offsets(batch)
                raise TransactionAborted(rewind, cause, retriable=retriable) from exc
            finally:
                if self._observe is not None:
                    self._observe("commit", time.perf_counter() - started)
            self.stats.commits += 1
            self.stats.committed.update(batch.after)
            if on_acked is not None:
                on_acked()

    async def _transact(self, batch: Batch) -> None:
        producer, outputs, consumer = self._producer, self._outputs, self.consumer
        if producer is None or outputs is None:
            raise RuntimeError("the transactional producer is not open")
        if consumer is None:
            raise RuntimeError("no consumer to take the group metadata from")
        await self._call(producer.begin_transaction)
        handed = await outputs.send_many(batch.outputs, range(len(batch.outputs)))
        results = await asyncio.wait_for(
            asyncio.gather(*(future for future, _ in handed), return_exceptions=True),
            timeout=self._timeout_s,
        )
        failures = [
            (result, indexes)
            for result, (_, indexes) in zip(results, handed, strict=True)
            if isinstance(result, BaseException)
        ]
        if failures:
            raise _all_failures(failures)
        offsets = [
            LibrdkafkaPartition(tp.topic, tp.partition, after) for tp, after in batch.after.items()
        ]
        metadata = consumer.consumer.consumer_group_metadata()
        await self._retrying(
            producer.send_offsets_to_transaction, offsets, metadata, self._timeout_s
        )
        await self._retrying(producer.commit_transaction, self._timeout_s)

    async def _retrying(self, call: Callable[..., Any], *args: Any) -> None:
        """Call again while librdkafka says the call itself may be retried (a timeout, a
        coordinator moving), within one transaction timeout; anything else is raised."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                await self._call(call, *args)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if (
                    error.retriable()
                    and not error.txn_requires_abort()
                    and not error.fatal()
                    and time.monotonic() < deadline
                ):
                    await asyncio.sleep(_RETRY_S)
                    continue
                raise

    def _cut_smaller(self, batch: Batch) -> bool:
        """Whether the batch held dead letters and later ones will be cut smaller."""
        if self.on_dead_letter_too_large is None:
            return False
        size = largest_dead_letter(batch.outputs, self._settings.kafka.dlq_topic)
        return size > 0 and self.on_dead_letter_too_large(size)

    async def _committed_offsets(self, batch: Batch) -> dict[TopicPartition, int]:
        """Where to read the batch's partitions again: their committed offsets (a commit whose
        outcome is unknown, a timeout, may have gone through; reading from the batch's first
        offsets would then repeat it). The batch's first offsets when the group cannot say."""
        consumer = self.consumer
        rewind = dict(batch.first)
        if consumer is None:
            return rewind
        asked = [LibrdkafkaPartition(tp.topic, tp.partition) for tp in batch.first]
        try:
            answered = await self._call(consumer.consumer.committed, asked, self._timeout_s)
        except Exception as exc:
            log.warning("cannot read the committed offsets (%r): reading the batch again", exc)
            return rewind
        for part in answered or ():
            tp = TopicPartition(part.topic, part.partition)
            if tp in rewind and part.error is None and part.offset >= 0:
                rewind[tp] = part.offset
        return rewind

    async def _abort(self, exc: BaseException) -> bool:
        """Abort the open transaction (or replace a producer that cannot); whether reading the
        batch again may succeed without a fix."""
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        failed = list(exc.failed.values()) if isinstance(exc, Unacknowledged) else []
        codes = {error.code()} if error is not None else {getattr(e, "code", None) for e in failed}
        if codes & _FENCED_CODES:
            self._fenced(exc)
        fatal = (error is not None and error.fatal()) or any(
            getattr(e, "fatal", False) for e in failed
        )
        log.warning(
            "transaction aborted, the batch will be read again: %r",
            exc,
            extra={"event": "retry", "stage": "transaction"},
        )
        if isinstance(exc, CallHung):  # its call still blocks: the next producer aborts
            return await self._after_abort(exc, None, True, hung=True)
        # Even after a fatal error: a producer the broker has not fenced would otherwise leave
        # its transaction open (holding back read_committed readers) until it times out.
        try:
            await self._call(self._producer.abort_transaction, self._timeout_s)
        except Exception as abort_error:
            if _error_code(abort_error) in _FENCED_CODES:
                self._fenced(abort_error)
            if not fatal:
                log.warning("abort failed (%r): starting a new transactional producer", abort_error)
            fatal = True
        return await self._after_abort(exc, error, fatal)

    def _fenced(self, exc: BaseException) -> None:
        """Another live producer has this process's transactional id: stop (exit 2), never
        fence it back."""
        self.halted = Halted(
            HaltReason.FENCED,
            f"another producer with transactional id {self.transactional_id} started "
            "(two scorer processes with the same STREAMSCORE_KAFKA__CLIENT_ID on this "
            "host, or this one was replaced while it hung); nothing more is committed "
            "here",
        )
        raise self.halted from exc

    async def _after_abort(
        self, exc: BaseException, error: Any, fatal: bool, *, hung: bool = False
    ) -> bool:
        """Replace a producer that cannot go on; whether reading the batch again may succeed
        without a fix."""
        if fatal:
            try:
                await self._replace(abandon=hung)
            except Exception as open_error:  # Kafka away: the next batch tries again
                log.warning("cannot start a new transactional producer yet: %r", open_error)
                return True
        if error is not None:
            return bool(error.retriable() or error.txn_requires_abort() or error.fatal())
        cause = _kafka_error(exc)
        return not isinstance(cause, KafkaError) or bool(cause.retriable)

    async def _replace(self, *, abandon: bool = False) -> None:
        old = self._outputs
        self._producer = self._outputs = None
        if old is not None:
            if abandon:
                log.warning(
                    "a transactional call hung past its timeout: giving its producer up; a "
                    "new one with the same id fences it and aborts its transaction",
                    extra={"event": "retry", "stage": "transaction"},
                )
                old.abandon()
            else:
                await old.close()
        await self.open()

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a thread of its own (a daemon: one librdkafka never returns from
        cannot hold the process at exit), waited for at most the transaction timeout plus
        :data:`_HANG_GRACE_S`; then :class:`CallHung`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def run() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (call(*args), None)
            except BaseException as exc:
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle, *outcome)

        name = getattr(call, "__name__", "call")
        threading.Thread(target=run, name=f"transaction-{name}", daemon=True).start()
        limit = self._timeout_s + _HANG_GRACE_S
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            # Should it ever return: its outcome concerns nobody (nor is it "never retrieved").
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise CallHung(f"{name} did not return within {limit:.0f} s") from None

    async def drain(self) -> None:
        async with self._lock:
            return

    async def close(self) -> None:
        async with self._lock:
            outputs, self._outputs, self._producer = self._outputs, None, None
            if outputs is not None:
                await outputs.close()


def _error_code(exc: BaseException) -> int | None:
    """The librdkafka error code ``exc`` carries, if it is one."""
    if isinstance(exc, KafkaException) and exc.args:
        return int(exc.args[0].code())
    return None


def _all_failures(failures: Sequence[tuple[BaseException, Sequence[int]]]) -> BaseException:
    """The failures of a transaction's records, each with the outputs its future covered, as
    one error: every failed record with its own Kafka error in one :class:`Unacknowledged` (so
    the error decided on is chosen among all of them, see :func:`_kafka_error`); anything that
    is not a Kafka error (a cancellation) as it is."""
    for error, _ in failures:
        if not isinstance(error, Unacknowledged | KafkaError):
            return error
    failed: dict[int, BaseException] = {}
    for error, indexes in failures:
        if isinstance(error, Unacknowledged):
            failed.update(error.failed)
        else:  # refused by produce() at once: one record
            failed.update(dict.fromkeys(indexes, error))
    return Unacknowledged(failed)


def _kafka_error(exc: BaseException) -> BaseException:
    """``exc`` as the Kafka error the runtime decides on (a librdkafka error converted). Of a
    transaction's failed records, one that only follows from another's failure (purged, or
    refused as the transaction must be aborted) is the cause only when nothing else failed."""
    if isinstance(exc, KafkaException) and exc.args:
        converted: BaseException = to_kafka_error(exc.args[0])
        return converted
    if isinstance(exc, Unacknowledged) and exc.failed:
        errors = list(exc.failed.values())
        return next((e for e in errors if not consequential(e)), errors[0])
    return exc
