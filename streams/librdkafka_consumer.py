"""Consuming through librdkafka (``STREAMSCORE_KAFKA__CLIENT=confluent``) without skipping.

FastStream's Confluent consumer drops every message that carries an error and commits "what
the last poll returned". librdkafka reports a record it cannot read (a corrupt or
undecompressable batch) as such an error message and moves its fetch position past it, so
dropping it would lose the records; and with two batches in flight a "last poll" commit would
commit records not yet delivered. :class:`GuardedConfluentConsumer`:

1. hands out only readable records, each as a :class:`LibrdkafkaRecord`; on a partition that
   reported a record error it hands out nothing at or after the error's offset, seeks that
   partition back to it and backs off (exponentially across consecutive failures, counted);
2. after ``max_attempts`` failures of the same partition without a record read from it in
   between, calls the guard's
   ``on_unreadable`` naming topic, partition and offset, and hands out nothing more: the scorer
   halts with :attr:`ExitCode.UNREADABLE_RECORD`, nothing at or past that place committed;
3. commits exactly the offsets it is given (:meth:`commit_offsets`), synchronously, in the
   order asked, on a commit thread of its own (a commit does not wait for a poll);
4. logs client-level errors (broker down, topic missing) and lets librdkafka recover from them,
   except a setting the broker refuses (group id, session timeout, credentials, ACLs), which
   librdkafka would retry forever: the guard's ``on_refused`` is called, nothing more is handed
   out, and the scorer stops with :attr:`ExitCode.CONFIGURATION`.

:class:`GuardedConfluentBroker` makes FastStream's Confluent subscriber build this consumer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException, Message
from confluent_kafka import TopicPartition as LibrdkafkaPartition
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.confluent.helpers.client import AsyncConfluentConsumer
from faststream.confluent.message import KafkaMessage as ConfluentMessage

from streams.fetch_guard import FetchGuard
from streams.librdkafka_errors import to_kafka_error
from streams.librdkafka_records import LibrdkafkaRecord
from streams.refusals import REFUSED_SETTING_CODES

log = logging.getLogger(__name__)

_NOT_RECORD_ERRORS = {LibrdkafkaError._PARTITION_EOF}


class GuardedConfluentConsumer(AsyncConfluentConsumer):
    """FastStream's Confluent consumer that never skips a record (see the module)."""

    def __init__(self, *topics: Any, guard: FetchGuard, **kwargs: Any) -> None:
        self._rebalance_hooks = {
            name: kwargs.pop(name, None) for name in ("on_assign", "on_revoke", "on_lost")
        }
        super().__init__(
            *topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
            **kwargs,
        )
        self.guard = guard
        self._assigned: set[TopicPartition] = set()
        self._failures: dict[TopicPartition, int] = {}
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")

    # Rebalance callbacks run on the consumer's thread, inside a poll.
    def _on_assign(self, consumer: Any, partitions: list[LibrdkafkaPartition]) -> None:
        self._assigned |= {TopicPartition(p.topic, p.partition) for p in partitions}
        self._call_hook("on_assign", consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[LibrdkafkaPartition]) -> None:
        self._assigned -= {TopicPartition(p.topic, p.partition) for p in partitions}
        for p in partitions:
            self._failures.pop(TopicPartition(p.topic, p.partition), None)
        self._call_hook("on_revoke", consumer, partitions)

    def _call_hook(self, name: str, *args: Any) -> None:
        hook = self._rebalance_hooks.get(name)
        if hook is not None:
            hook(*args)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (None before one)."""
        try:
            _low, high = self.consumer.get_watermark_offsets(
                LibrdkafkaPartition(tp.topic, tp.partition), cached=True
            )
        except KafkaException:
            return None
        return int(high) if high is not None and high >= 0 else None

    async def getmany(
        self,
        timeout: float = 0.1,  # noqa: ASYNC109 (FastStream calls it so)
        max_records: int | None = 10,
    ) -> tuple[Message, ...]:
        if self.guard.halted is not None:
            await asyncio.sleep(timeout)
            return ()
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(
            self._thread_pool, self._fetch, max_records or 10, timeout
        )
        records, broken = self._sort(messages)
        if broken:
            records = [
                m
                for m in records
                if (b := broken.get(TopicPartition(m.topic(), m.partition()))) is None
                or (m.offset() or 0) < b[0]
            ]
        if self._failures:  # a partition that hands out a record again starts afresh
            for m in records:
                self._failures.pop(TopicPartition(m.topic(), m.partition()), None)
        if broken:
            await self._failed(broken)
        return tuple(records)

    def _fetch(self, limit: int, timeout: float) -> list[Message]:
        """Up to ``limit`` messages as soon as one is there (``timeout`` at most), not once
        ``limit`` are there: librdkafka's ``consume`` alone waits to fill the batch, which adds
        up to ``timeout`` to every event's latency below full load."""
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        if limit == 1:
            return [first]
        return [first, *self.consumer.consume(limit - 1, 0)]

    def _sort(
        self, messages: Iterable[Message]
    ) -> tuple[list[Message], dict[TopicPartition, tuple[int, LibrdkafkaError]]]:
        """Readable records, and per partition the first offset librdkafka could not read."""
        records: list[Message] = []
        broken: dict[TopicPartition, tuple[int, LibrdkafkaError]] = {}
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
                continue
            if error.code() in _NOT_RECORD_ERRORS:
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error.code() in REFUSED_SETTING_CODES:
                self._refused(error)
                continue
            if topic is None or partition is None or partition < 0 or offset is None or offset < 0:
                self.guard.failures += 1
                log.warning(
                    "Kafka client error (the client retries by itself): %s",
                    error.str(),
                    extra={"event": "retry", "stage": "fetch"},
                )
                continue
            tp = TopicPartition(topic, partition)
            if tp not in broken or offset < broken[tp][0]:
                broken[tp] = (offset, error)
        return records, broken

    def _refused(self, error: LibrdkafkaError) -> None:
        guard = self.guard
        if guard.halted is not None:
            return
        guard.halted = f"Kafka refused a setting: {error.name()}: {error.str()}"
        if guard.on_refused is not None:
            guard.on_refused(guard.halted)

    async def _failed(self, broken: dict[TopicPartition, tuple[int, LibrdkafkaError]]) -> None:
        """Seek each broken partition back to its first unread offset; back off; halt after
        ``max_attempts`` in a row on one partition."""
        guard = self.guard
        worst = 0
        for tp, (offset, error) in sorted(broken.items()):
            guard.failures += 1
            if guard.on_failure is not None:
                guard.on_failure()
            attempts = self._failures[tp] = self._failures.get(tp, 0) + 1
            worst = max(worst, attempts)
            await self.seek(tp.topic, tp.partition, offset)
            log.warning(
                "cannot read %s[%d] at offset %d, rewound to it (attempt %d of %d): %s",
                tp.topic,
                tp.partition,
                offset,
                attempts,
                guard.max_attempts,
                error.str(),
                extra={"event": "retry", "stage": "fetch", "attempt": attempts},
            )
            if attempts >= guard.max_attempts and guard.halted is None:
                guard.halted = (
                    f"cannot read topic {tp.topic} partition {tp.partition} at offset {offset} "
                    f"after {attempts} attempts: {error.name()}: {error.str()}; nothing at or "
                    "after it was committed"
                )
                guard.on_unreadable(guard.halted)
                return
        delay = min(guard.max_backoff_s, guard.initial_backoff_s * 2 ** (worst - 1))
        await asyncio.sleep(delay)

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit exactly these next-offsets-to-read, synchronously (raises a Kafka error)."""
        partitions = [LibrdkafkaPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._committer, self._commit_sync, partitions)
        except KafkaException as exc:
            raise to_kafka_error(exc.args[0]) from exc

    def _commit_sync(self, partitions: list[LibrdkafkaPartition]) -> None:
        for result in self.consumer.commit(offsets=partitions, asynchronous=False) or ():
            if result.error is not None:
                raise KafkaException(result.error)

    async def rewind(self, records: Iterable[Any]) -> None:
        """Seek every partition of ``records`` back to its first record (a batch not handled)."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        assigned = self._assigned
        for tp, offset in first.items():
            if tp in assigned:
                await self.seek(tp.topic, tp.partition, offset)

    async def stop(self) -> None:
        self._committer.shutdown(wait=True)
        await super().stop()


class GuardedBatchMessage(ConfluentMessage):
    """A consumed batch: acknowledging is the scorer's explicit commit; a nack rewinds.
    ``raw_message`` holds librdkafka's messages (FastStream reads them); :attr:`records` the
    same records as the scorer reads them."""

    def __init__(self, *args: Any, records: tuple[LibrdkafkaRecord, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records = records

    async def ack(self) -> None:
        return

    async def nack(self) -> None:
        consumer = self.consumer
        if isinstance(consumer, GuardedConfluentConsumer):
            await consumer.rewind(self.records)


class GuardedConfluentBroker(ConfluentBroker):
    """FastStream's Confluent ``KafkaBroker`` whose subscribers build
    :class:`GuardedConfluentConsumer` (the running one is :attr:`consumer`)."""

    def __init__(self, *args: Any, guard: FetchGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_guard = guard
        self.consumer: GuardedConfluentConsumer | None = None

    async def _connect(self) -> Callable[..., AsyncConfluentConsumer]:
        builder = await super()._connect()
        config, admin, logger = builder.config, builder.admin, builder.logger  # type: ignore[attr-defined]

        def build(*topics: Any, **kwargs: Any) -> GuardedConfluentConsumer:
            consumer = GuardedConfluentConsumer(
                *topics,
                guard=self.fetch_guard,
                config=config,
                admin_service=admin,
                logger=logger,
                **kwargs,
            )
            self.consumer = consumer
            return consumer

        self.config.broker_config.builder = build
        return build

    async def batch_parser(
        self, messages: tuple[Message, ...], _original: Any
    ) -> GuardedBatchMessage:
        """FastStream's parser would decode every header (and fail on binary ones); the
        scorer reads records itself."""
        records = tuple(map(LibrdkafkaRecord, messages))
        first, last = (records[0], records[-1]) if records else (None, None)
        return GuardedBatchMessage(
            raw_message=messages,
            body=b"",
            records=records,
            message_id=f"{first.offset}-{last.offset}" if first and last else None,
            consumer=self.consumer,
            is_manual=True,
        )
