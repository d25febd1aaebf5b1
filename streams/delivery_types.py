"""What processing hands to delivery, and what any delivery offers (at-least-once in
:mod:`streams.delivery`, exactly-once in :mod:`streams.transactions`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aiokafka.structs import TopicPartition

from streams.dead_letters import Headers
from streams.halts import Halted

Output = tuple[str, bytes | None, bytes | None, Headers | None]
"""(topic, value, key, headers) of one prediction or dead letter."""
Commit = Callable[[dict[TopicPartition, int]], Awaitable[None]]
"""Commits the given next-offsets-to-read of one batch."""


class Outputs(Protocol):
    """Where outputs go: ``send`` hands one record over; the awaitable it returns resolves once
    Kafka acknowledged the record (or raises why not)."""

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers | None
    ) -> Awaitable[Any]: ...


Handed = list[tuple[asyncio.Future[Any], list[int]]]
"""Outputs handed over: each acknowledgement future with the indexes of the outputs it
acknowledges (one output, or a whole record batch). A future that fails with
:class:`Unacknowledged` names which of its outputs failed; any other error fails them all."""


class Unacknowledged(Exception):
    """Some of the outputs one future covers were not acknowledged (the others were)."""

    def __init__(self, failed: dict[int, BaseException]) -> None:
        super().__init__(f"{len(failed)} outputs not acknowledged")
        self.failed = failed
        """The index of each output that failed, with its error."""


@runtime_checkable
class BatchOutputs(Outputs, Protocol):
    """Outputs that can also hand many records over at once, as record batches."""

    async def send_many(self, outputs: Sequence[Output], indexes: Sequence[int]) -> Handed:
        """Hand over ``outputs[i]`` for each ``i`` of ``indexes`` (each partition's records in
        that order). A record refused at once gets an already-failed future."""
        ...


@dataclass
class DeliveryStats:
    commits: int = 0
    commit_failures: int = 0
    resends: int = 0
    """Rounds of re-sending unacknowledged outputs."""
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    """The next offset to read, per partition, as last committed."""


@dataclass(frozen=True)
class Batch:
    """What one consumed batch hands to delivery."""

    outputs: list[Output]
    sources: list[TopicPartition]
    """The input partition each output comes from (same order as ``outputs``)."""
    first: dict[TopicPartition, int]
    """Per input partition, the batch's first offset (where a retry rewinds to)."""
    after: dict[TopicPartition, int]
    """Per input partition, the offset after the batch's last record (what is committed)."""


class Acked(Protocol):
    """Called once a batch's outputs are acknowledged (before its commit): with the input
    partitions whose share was delivered, or None for all of them (exactly-once may leave a
    partition out, one this process no longer owns or fetched before its assignment)."""

    def __call__(self, delivered: Collection[TopicPartition] | None = None, /) -> None: ...


Observe = Callable[[str, float], None]
"""Receives (stage, seconds) for the ``ack`` and ``commit`` stages of every batch."""


class BatchDelivery(Protocol):
    """How a batch's outputs and offsets reach Kafka (at-least-once or exactly-once)."""

    halted: Halted | None
    stats: DeliveryStats

    def check(self) -> None: ...

    def halt(self, error: BaseException) -> None: ...

    async def deliver(
        self, batch: Batch, commit: Commit, on_acked: Acked | None = None
    ) -> None: ...

    async def drain(self) -> None: ...
