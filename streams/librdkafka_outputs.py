"""Outputs through one librdkafka producer (``STREAMSCORE_KAFKA__CLIENT=confluent``).

``send`` enqueues the record in librdkafka (a C call, no I/O on the event loop) and returns a
future that the producer's delivery report resolves. ``send_many`` enqueues a batch's records
with one future per :data:`GROUP` records, resolved once every report of the group is in (and
naming the records that failed, if any): no future, callback and wake-up per record. Delivery
reports are served by a poll thread; it hands a whole poll's reports to the event loop at once
(one wake-up per poll, not per record). Errors reach the delivery layer as the Kafka errors it
decides on (:mod:`streams.librdkafka_errors`): too large, retriable, or not.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException, Message, Producer

from settings import KafkaSettings, Settings
from streams.dead_letters import Headers
from streams.delivery_types import Handed, Output, Unacknowledged
from streams.librdkafka_errors import to_kafka_error
from streams.librdkafka_options import producer_config

_POLL_S = 0.05
_QUEUE_FULL_WAIT_S = 0.002
_CLOSE_FLUSH_S = 30.0
RESOLVE_SLICE = 128
"""Delivery reports resolved per event-loop pass (each wakes its waiters)."""
GROUP = 128
"""Records of a ``send_many`` behind one future (a timeout re-sends the group's records)."""

Report = tuple[asyncio.Future[None], LibrdkafkaError | dict[int, LibrdkafkaError] | None]
"""A future and how it ends: acknowledged (None), one error, or the failed records of a group."""


class _Group:
    """The delivery reports of up to :data:`GROUP` records behind one future. Reports come in
    on the poll thread (or the thread flushing at close), records are added on the loop.

    The records without headers (predictions) share one delivery callback (a bound method
    made once, not a callable per record: half the cost of a ``produce`` call). Such a report
    does not say which record it is for, so a failed one is matched to its record by topic,
    key and value after the last report is in (:meth:`_failed_records`); failures are rare,
    acknowledgements need no matching. A delivery report carries no headers, so a record
    with headers (a dead letter) gets a callback that names it (:meth:`delivered_at`)."""

    __slots__ = (
        "_done",
        "_failed",
        "_failures",
        "_lock",
        "_outputs",
        "_received",
        "_reports",
        "_sealed",
        "future",
        "indexes",
    )

    def __init__(
        self, future: asyncio.Future[None], reports: deque[Report], outputs: Sequence[Output]
    ) -> None:
        self.future = future
        self.indexes: list[int] = []
        self._outputs = outputs
        self._reports = reports
        self._failures: list[tuple[LibrdkafkaError, Message]] = []
        """Failed reports of records without headers, to match."""
        self._failed: dict[int, LibrdkafkaError] = {}
        """Failed records whose callback named them."""
        self._received = 0
        self._sealed = False
        self._done = False
        self._lock = threading.Lock()

    def delivered(self, error: LibrdkafkaError | None, message: Message) -> None:
        with self._lock:
            if error is not None:
                self._failures.append((error, message))
            self._received += 1
            self._finish_if_complete()

    def delivered_at(self, index: int, error: LibrdkafkaError | None, _message: Message) -> None:
        with self._lock:
            if error is not None:
                self._failed[index] = error
            self._received += 1
            self._finish_if_complete()

    def seal(self) -> None:
        """No more records join: the future ends once the last report is in."""
        with self._lock:
            self._sealed = True
            self._finish_if_complete()

    def _finish_if_complete(self) -> None:
        if self._sealed and not self._done and self._received == len(self.indexes):
            self._done = True
            self._reports.append((self.future, self._failed_records() or None))

    def _failed_records(self) -> dict[int, LibrdkafkaError]:
        """The index of each failed record. A failed report of a record without headers is the
        first such record of the group not matched yet with the same topic, key and value
        (records alike in all three are interchangeable: re-sending either sends the same). A
        report that matches none, which librdkafka does not give, fails every such record not
        matched yet: re-sent, never lost."""
        failed = dict(self._failed)
        if not self._failures:
            return failed
        unnamed = [i for i in self.indexes if not self._outputs[i][3]]
        codes = {error.code() for error, _ in self._failures}
        if len(self._failures) == len(unnamed) and len(codes) == 1:
            # all failed alike (Kafka away, say): nothing to tell apart
            return failed | dict.fromkeys(unnamed, self._failures[0][0])
        for error, message in self._failures:
            found = (message.topic(), message.key(), message.value())
            for index in unnamed:
                if index not in failed and _content(self._outputs[index]) == found:
                    failed[index] = error
                    break
            else:
                failed.update((i, error) for i in unnamed if i not in failed)
        return failed


def _content(output: Output) -> tuple[str, bytes | None, bytes | None]:
    """What a delivery report gives back of a record: topic, key, value."""
    topic, value, key, _headers = output
    return topic, key, value


class LibrdkafkaOutputs:
    """Sends through one idempotent librdkafka producer (``acks=all``)."""

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._reports: deque[Report] = deque()
        self._stopped = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers | None
    ) -> Awaitable[Any]:
        future: asyncio.Future[None] = self._loop.create_future()
        reports = self._reports

        def delivered(error: LibrdkafkaError | None, _message: Message) -> None:
            reports.append((future, error))

        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=delivered,
                )
            except BufferError:  # librdkafka's queue is full: let the poll thread drain it
                await asyncio.sleep(_QUEUE_FULL_WAIT_S)
                continue
            except KafkaException as exc:
                raise to_kafka_error(exc.args[0]) from exc
            return future

    async def send_many(self, outputs: Sequence[Output], indexes: Sequence[int]) -> Handed:
        """Enqueue ``outputs[i]`` for each ``i`` of ``indexes``, in that order, behind one future
        per :data:`GROUP` records; a record refused at once gets an already-failed future."""
        handed: Handed = []
        loop, produce = self._loop, self._producer.produce
        group: _Group | None = None
        delivered = None
        for index in indexes:
            if group is None:
                group = _Group(loop.create_future(), self._reports, outputs)
                delivered = group.delivered
            topic, value, key, headers = outputs[index]
            while True:
                try:
                    if headers:  # its report cannot be matched: a callback naming it
                        with_headers: Any = headers  # librdkafka's stubs say str values only
                        produce(
                            topic,
                            value,
                            key,
                            headers=with_headers,
                            on_delivery=partial(group.delivered_at, index),
                        )
                    else:  # positional, no headers: the cheapest call
                        produce(topic, value, key, on_delivery=delivered)
                except BufferError:  # librdkafka's queue is full: let the poll thread drain it
                    await asyncio.sleep(_QUEUE_FULL_WAIT_S)
                    continue
                except KafkaException as exc:
                    refused: asyncio.Future[None] = loop.create_future()
                    refused.set_exception(to_kafka_error(exc.args[0]))
                    handed.append((refused, [index]))
                else:
                    group.indexes.append(index)  # before its report can be counted
                break
            if len(group.indexes) >= GROUP:
                group.seal()
                handed.append((group.future, group.indexes))
                group = None
        if group is not None and group.indexes:
            group.seal()
            handed.append((group.future, group.indexes))
        if self._reports:
            self._hand_over()  # groups whose reports all came in before they were sealed
        return handed

    def _poll(self) -> None:
        while not self._stopped.is_set():
            try:
                served = self._producer.poll(_POLL_S)
            except KafkaException:  # never end the thread: reports still come after an error
                self._stopped.wait(_POLL_S)
                continue
            if served and self._reports:
                self._hand_over()

    def _hand_over(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop is closed: nobody waits any more
            return

    def _resolve(self) -> None:
        """Resolve up to :data:`RESOLVE_SLICE` reports; the rest in a later loop pass."""
        reports = self._reports
        for _ in range(min(len(reports), RESOLVE_SLICE)):
            future, error = reports.popleft()
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            elif isinstance(error, dict):
                failed: dict[int, BaseException] = {i: to_kafka_error(e) for i, e in error.items()}
                future.set_exception(Unacknowledged(failed))
            else:
                future.set_exception(to_kafka_error(error))
        if reports:
            self._loop.call_soon(self._resolve)

    def abandon(self) -> None:
        """Stop serving reports without flushing: the producer is given up (a call of its
        hangs); what it still holds belongs to a transaction its successor aborts."""
        self._stopped.set()
        for future, _ in self._reports:
            if not future.done():
                future.cancel()
        self._reports.clear()

    async def close(self) -> None:
        """Deliver what is still queued (bounded), then stop the poll thread."""
        await asyncio.to_thread(self._producer.flush, _CLOSE_FLUSH_S)
        self._stopped.set()
        await asyncio.to_thread(self._poller.join)
        while self._reports:
            self._resolve()


@asynccontextmanager
async def librdkafka_outputs(kafka: KafkaSettings) -> AsyncIterator[LibrdkafkaOutputs]:
    """Start the producer; flush and stop it on exit."""
    outputs = LibrdkafkaOutputs(Producer(producer_config(kafka)), asyncio.get_running_loop())
    try:
        yield outputs
    finally:
        await outputs.close()


def librdkafka_producer_outputs(
    settings: Settings, _broker: Any
) -> AbstractAsyncContextManager[LibrdkafkaOutputs]:
    """The scorer's outputs (an :data:`streams.outputs.OutputsFactory`)."""
    return librdkafka_outputs(settings.kafka)
