"""Outputs through one librdkafka producer (``STREAMSCORE_KAFKA__CLIENT=confluent``).

``send`` enqueues the record in librdkafka (a C call, no I/O on the event loop) and returns a
future that the producer's delivery report resolves. Delivery reports are served by a poll
thread; it hands a whole poll's reports to the event loop at once (one wake-up per poll, not
per record). Errors reach the delivery layer as the Kafka errors it decides on
(:mod:`streams.librdkafka_errors`): too large, retriable, or not.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException, Message, Producer

from settings import KafkaSettings, Settings
from streams.dead_letters import Headers
from streams.librdkafka_errors import to_kafka_error
from streams.librdkafka_options import producer_config

_POLL_S = 0.05
_QUEUE_FULL_WAIT_S = 0.002
_CLOSE_FLUSH_S = 30.0
RESOLVE_SLICE = 128
"""Delivery reports resolved per event-loop pass (each wakes its waiters)."""


class LibrdkafkaOutputs:
    """Sends through one idempotent librdkafka producer (``acks=all``)."""

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self._producer = producer
        self._loop = loop
        self._reports: deque[tuple[asyncio.Future[None], LibrdkafkaError | None]] = deque()
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

    def _poll(self) -> None:
        while not self._stopped.is_set():
            if self._producer.poll(_POLL_S) and self._reports:
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
            else:
                future.set_exception(to_kafka_error(error))
        if reports:
            self._loop.call_soon(self._resolve)

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
