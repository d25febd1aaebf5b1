"""Open-loop Kafka load with read-back: events sent at a fixed rate, outputs matched by
``event_id``; and the event templates every input copy is drawn from."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.results import Quantiles
from schemas import format_time
from streamscore_cli import demo_data

Template = tuple[bytes, bytes]
"""(Kafka key, value with placeholders for the event id and time)."""

ET = b"@@EVENT_TIME@@"
ID = b"@@EVENT_ID@@"


def event_templates(count: int, seed: int, unknown_ratio: float = 0.05) -> list[Template]:
    """(key, value template) pairs drawn like ``streamscore produce``; the value holds
    placeholders for the event id and the event time, filled in at send time."""
    rng = np.random.default_rng(seed)
    entities = demo_data.make_entities()
    who, rows = demo_data.make_events(entities, count, rng)
    unknown = rng.random(count) < unknown_ratio
    out: list[Template] = []
    for i in range(count):
        entity = f"unknown-{int(who[i]):06d}" if unknown[i] else entities.ids[int(who[i])]
        features = {
            name: (None if np.isnan(v) else float(v))
            for name, v in zip(demo_data.EVENT_FEATURES, rows[i], strict=True)
        }
        value = json.dumps(
            {
                "event_id": ID.decode(),
                "entity_id": entity,
                "event_time": ET.decode(),
                "features": features,
            },
            separators=(",", ":"),
        ).encode()
        out.append((entity.encode(), value))
    return out


def fill(template: bytes, event_id: str, wall: float) -> bytes:
    stamp = format_time(datetime.fromtimestamp(wall, UTC)).encode()
    return template.replace(ID, event_id.encode()).replace(ET, stamp)


@dataclass
class ProbeResult:
    offered_eps: float
    achieved_eps: float
    sent: int
    delivered: int
    latencies_ms: list[float] = field(default_factory=list)
    to_output_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    sent_times: list[float] = field(default_factory=list)
    """Wall time of every send, in order."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(send wall time, latency ms) of every delivered event."""
    t_start: float = 0.0
    t_end: float = 0.0

    @property
    def latency(self) -> Quantiles:
        return Quantiles.of(self.latencies_ms)

    @property
    def to_output_sent(self) -> Quantiles:
        """Sent → the output record's Kafka timestamp (set by the consumer's producer when it
        sent the output; ms resolution)."""
        return Quantiles.of(self.to_output_ms)

    @property
    def output_sent_to_read(self) -> Quantiles:
        return Quantiles.of(self.delivery_ms)


class Prober:
    """Sends events at a fixed rate (open loop: the schedule never waits for results) and
    reads the outputs back, matching them by ``event_id``. Latency = wall time the output
    was read minus the wall time the event was sent (which is also its ``event_time``)."""

    def __init__(
        self, bootstrap: str, input_topic: str, output_topic: str, templates: list[Template]
    ) -> None:
        self._bootstrap = bootstrap
        self._input = input_topic
        self._output = output_topic
        self._templates = templates
        self._sent_at: dict[str, float] = {}
        self._got: dict[str, float] = {}
        self._out_ts: dict[str, float] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, client_id="bench-probe", acks=1, linger_ms=0
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="bench-probe-read"
        )
        self._reader: asyncio.Task[None] | None = None

    async def start(self, partitions: list[int]) -> None:
        await self._producer.start()
        await self._consumer.start()
        tps = [TopicPartition(self._output, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=20)
            now = time.time()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        event_id = json.loads(record.value)["event_id"]
                        if event_id in self._sent_at and event_id not in self._got:
                            self._got[event_id] = now
                            if record.timestamp is not None and record.timestamp > 0:
                                self._out_ts[event_id] = record.timestamp / 1000

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()
        await self._producer.stop()

    async def offer(
        self, rate: float, window_s: float, prefix: str, settle_s: float
    ) -> ProbeResult:
        loop = asyncio.get_running_loop()
        ids: list[str] = []
        pending: list[asyncio.Future[Any]] = []
        t0 = loop.time()
        wall0 = time.time()
        sent = 0
        n = len(self._templates)
        while True:
            elapsed = loop.time() - t0
            if elapsed >= window_s:
                break
            due = min(int(elapsed * rate) + 1, int(window_s * rate))
            while sent < due:
                key, template = self._templates[sent % n]
                event_id = f"{prefix}-{sent:07d}"
                wall = time.time()
                value = fill(template, event_id, wall)
                self._sent_at[event_id] = wall
                ids.append(event_id)
                pending.append(await self._producer.send(self._input, value, key=key))
                sent += 1
            if len(pending) > 2_000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.002)
        send_s = loop.time() - t0
        await asyncio.gather(*pending)
        deadline = loop.time() + settle_s
        while loop.time() < deadline and any(i not in self._got for i in ids[-50:]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # then give stragglers (other partitions) a moment more, bounded by the same deadline
        while loop.time() < deadline and sum(i in self._got for i in ids) < len(ids):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        samples = [
            (self._sent_at[i], (self._got[i] - self._sent_at[i]) * 1000)
            for i in ids
            if i in self._got
        ]
        lat = [x for _, x in samples]
        split = [i for i in ids if i in self._got and i in self._out_ts]
        to_output = [(self._out_ts[i] - self._sent_at[i]) * 1000 for i in split]
        delivery = [(self._got[i] - self._out_ts[i]) * 1000 for i in split]
        return ProbeResult(
            offered_eps=rate,
            achieved_eps=sent / send_s if send_s > 0 else 0.0,
            sent=sent,
            delivered=len(lat),
            latencies_ms=lat,
            to_output_ms=to_output,
            delivery_ms=delivery,
            sent_times=[self._sent_at[i] for i in ids],
            samples=samples,
            t_start=wall0,
            t_end=wall0 + send_s,
        )
