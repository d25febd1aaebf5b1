"""Fetching that never moves the group past records nobody handled.

aiokafka's ``getmany`` drains the partitions of a fetch one after another and advances each
partition's position as it goes. When a later partition raises (a codec it cannot read, a
corrupt batch, a header it cannot decode) the records already drained from the earlier ones
are thrown away with the exception, but their positions stay advanced: the next batch's commit
would move the group past them. FastStream's consume loop logs such errors and fetches again,
so nothing would ever notice. This module owns that step:

* :class:`GuardedConsumer` remembers, per assigned partition, the offset of the first record
  not yet handed to the handler. When a fetch raises, it seeks every assigned partition back to
  that offset, waits (exponential backoff across consecutive failures, counted), and fetches
  again.
* After ``max_attempts`` consecutive failures it reads the partitions one at a time to find
  the one that cannot be read, and calls ``on_unreadable`` with a message naming topic,
  partition and offset; the scorer halts with :attr:`ExitCode.UNREADABLE_RECORD`. Nothing at or
  past that place is committed or skipped. A failure that no single partition reproduces (the
  broker came back) starts the count again.
* :class:`GuardedKafkaBroker` makes FastStream's subscriber build a :class:`GuardedConsumer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker

from streams import lenient_records

log = logging.getLogger(__name__)

lenient_records.install()


class FetchGuard:
    """Policy and state shared by the consumer a subscriber builds (see the module)."""

    def __init__(
        self,
        *,
        max_attempts: int,
        initial_backoff_s: float,
        max_backoff_s: float,
        on_unreadable: Callable[[str], None],
        on_failure: Callable[[], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.on_revoked: Callable[[set[TopicPartition]], Awaitable[None]] | None = None
        """Awaited before partitions are released (exactly-once: the open transaction)."""
        self.on_assigned: Callable[[Any, set[TopicPartition]], Awaitable[None]] | None = None
        """Awaited when partitions are assigned, before they are fetched."""
        self.max_attempts = max_attempts
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_unreadable = on_unreadable
        self.on_failure = on_failure
        self.on_refused = on_refused
        """Called once when Kafka refuses a setting of the consumer's (librdkafka reports it
        as an error of the poll: group id, session timeout, credentials, ACLs); a restart
        without a change would be refused again."""
        self.failures = 0
        """Fetch failures since the start (every one is also logged)."""
        self.halted: str | None = None
        self.rebalances = 0
        """Counts revocations and assignments: records fetched when it was lower than a
        partition's latest assignment were fetched before that assignment."""


class _ForgetOnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A rebalance resets positions to the committed offsets: forget what was handed out."""

    def __init__(self, consumer: GuardedConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        consumer = self._consumer
        consumer.guard.rebalances += 1
        consumer.ready.clear()  # nothing is handed out until the new assignment is set up
        if consumer.guard.on_revoked is not None:
            await consumer.guard.on_revoked(set(revoked))
        consumer.forget()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self._consumer
        consumer.guard.rebalances += 1
        consumer.forget()
        try:
            if consumer.guard.on_assigned is not None:
                await consumer.guard.on_assigned(consumer, set(assigned))
        finally:
            consumer.ready.set()


class GuardedConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An ``AIOKafkaConsumer`` whose ``getmany`` rewinds instead of losing records."""

    def __init__(self, *args: Any, guard: FetchGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.ready = asyncio.Event()
        """Set unless a rebalance is being set up (records are handed out only when set)."""
        self.ready.set()
        self._next: dict[TopicPartition, int] = {}
        self._consecutive = 0
        self.fetched_at = 0
        """``guard.rebalances`` as it was before the last fetch began (a rebalance during the
        fetch makes its records count as fetched before it)."""

    def subscribe(self, *args: Any, listener: Any = None, **kwargs: Any) -> None:
        super().subscribe(*args, listener=_Chained(_ForgetOnRebalance(self), listener), **kwargs)

    def forget(self) -> None:
        self._next.clear()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        super().seek(partition, offset)
        self._next[partition] = offset

    async def _baseline(self) -> None:
        for tp in self.assignment():
            if tp not in self._next:
                self._next[tp] = await self.position(tp)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        if self.guard.halted is not None:
            raise ConsumerStoppedError()
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=max(timeout_ms, 100) / 1000)
            except TimeoutError:
                return {}
        mark = self.guard.rebalances
        try:
            await self._baseline()
            fetched: dict[TopicPartition, list[Any]] = await super().getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
        except (ConsumerStoppedError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await self._failed(exc)
            return {}
        self._consecutive = 0
        self.fetched_at = mark
        for tp, records in fetched.items():
            if records:
                self._next[tp] = records[-1].offset + 1
        return fetched

    def _rewind(self) -> None:
        assigned = self.assignment()
        for tp, offset in list(self._next.items()):
            if tp in assigned:
                super().seek(tp, offset)

    async def _failed(self, exc: Exception) -> None:
        """1. rewind every partition to its first record not handed out; 2. back off;
        3. after ``max_attempts`` in a row, find the partition and halt."""
        guard = self.guard
        guard.failures += 1
        if guard.on_failure is not None:
            guard.on_failure()
        self._consecutive += 1
        self._rewind()
        log.warning(
            "fetch failed, rewound to the last records handed out (attempt %d of %d): %r",
            self._consecutive,
            guard.max_attempts,
            exc,
            extra={"event": "retry", "stage": "fetch", "attempt": self._consecutive},
        )
        if self._consecutive >= guard.max_attempts:
            place = await self._find_unreadable()
            self._rewind()
            if place is not None:
                guard.halted = (
                    f"cannot read {place} after {self._consecutive} attempts: {exc!r}; "
                    "nothing at or after it was committed"
                )
                guard.on_unreadable(guard.halted)
                raise ConsumerStoppedError() from exc
            self._consecutive = 0  # no single partition fails now: it was transient
        delay = min(guard.max_backoff_s, guard.initial_backoff_s * 2 ** (self._consecutive - 1))
        await asyncio.sleep(delay)

    async def _find_unreadable(self) -> str | None:
        """Read each assigned partition on its own; name the first one that raises."""
        for tp in sorted(self.assignment()):
            offset = self._next.get(tp)
            try:
                await AIOKafkaConsumer.getmany(self, tp, timeout_ms=1_000)
            except (ConsumerStoppedError, asyncio.CancelledError):
                raise
            except Exception:
                return (
                    f"topic {tp.topic} partition {tp.partition} at offset {offset} "
                    "(the first record not yet read; the unreadable one is at or after it)"
                )
            finally:
                self._rewind()
        return None


class _Chained(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls our listener, then FastStream's (which logs assignments)."""

    def __init__(self, first: ConsumerRebalanceListener, second: Any) -> None:
        self._listeners = [first] if second is None else [first, second]

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for listener in self._listeners:
            result = listener.on_partitions_revoked(revoked)
            if asyncio.iscoroutine(result):
                await result

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for listener in self._listeners:
            result = listener.on_partitions_assigned(assigned)
            if asyncio.iscoroutine(result):
                await result


class GuardedKafkaBroker(KafkaBroker):
    """FastStream's ``KafkaBroker`` whose subscribers consume through :class:`GuardedConsumer`.

    FastStream builds consumers from the ``partial`` it keeps in its broker config when it
    connects; this swaps that builder for one that builds the guarded consumer with the same
    options (a unit test checks that the running subscriber's consumer is guarded).
    """

    def __init__(self, *args: Any, guard: FetchGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_guard = guard

    async def _connect(self) -> Callable[..., AIOKafkaConsumer]:
        builder = await super()._connect()
        if not isinstance(builder, partial):
            raise RuntimeError("FastStream no longer builds consumers from a partial")
        guarded = partial(
            GuardedConsumer, *builder.args, guard=self.fetch_guard, **builder.keywords
        )
        self.config.broker_config.builder = guarded
        return guarded
