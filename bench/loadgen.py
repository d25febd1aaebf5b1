"""Load generators: open-loop Kafka probes with read-back, and an HTTP closed-loop client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.common import percentiles
from schemas import format_time
from streamscore_cli import demo_data

ET = b"@@EVENT_TIME@@"
ID = b"@@EVENT_ID@@"


def event_templates(
    count: int, seed: int, unknown_ratio: float = 0.05
) -> list[tuple[bytes, bytes]]:
    """(key, value template) pairs drawn like ``streamscore produce``; the value holds
    placeholders for the event id and the event time, filled in at send time."""
    rng = np.random.default_rng(seed)
    entities = demo_data.make_entities()
    who, rows = demo_data.make_events(entities, count, rng)
    unknown = rng.random(count) < unknown_ratio
    out: list[tuple[bytes, bytes]] = []
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
    t_start: float = 0.0
    t_end: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "offered_eps": round(self.offered_eps, 1),
            "achieved_send_eps": round(self.achieved_eps, 1),
            "sent": self.sent,
            "delivered": self.delivered,
            **{f"{k}_ms": v for k, v in percentiles(self.latencies_ms).items()},
            # the same latency in two parts, split at the output record's Kafka timestamp
            # (set by the consumer's producer when it sent the output; ms resolution)
            "split_ms": {
                "sent_to_output_sent": percentiles(self.to_output_ms),
                "output_sent_to_read": percentiles(self.delivery_ms),
            },
        }


class Prober:
    """Sends events at a fixed rate (open loop: the schedule never waits for results) and
    reads the outputs back, matching them by ``event_id``. Latency = wall time the output
    was read minus the wall time the event was sent (which is also its ``event_time``)."""

    def __init__(
        self, bootstrap: str, input_topic: str, output_topic: str, templates: list[Any]
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
        lat = [(self._got[i] - self._sent_at[i]) * 1000 for i in ids if i in self._got]
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
            t_start=wall0,
            t_end=wall0 + send_s,
        )


# ------------------------------------------------------------------------------ HTTP
def http_bodies(count: int, seed: int) -> list[bytes]:
    now = time.time()
    templates = event_templates(count, seed)
    return [fill(template, f"h-{i:07d}", now) for i, (_, template) in enumerate(templates)]


class _Conn:
    """One keep-alive HTTP/1.1 connection; a minimal client (see :func:`http_level`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def http_level(
    url: str, concurrency: int, duration_s: float, bodies: list[bytes], offset: int = 0
) -> dict[str, Any]:
    """``concurrency`` clients, each with its own keep-alive connection, each sending the next
    request as soon as the previous one was answered (closed loop).

    A minimal asyncio HTTP/1.1 client rather than httpx: on this 2-core machine one
    ``httpx.AsyncClient`` spends ~1.2 ms of CPU per request and, with a 64-connection pool,
    saturates its core at ~150 req/s while the server idles (measured) - it would measure
    itself, not the server."""
    parsed = httpx.URL(url)
    host, port, path = parsed.host, parsed.port or 80, parsed.raw_path.decode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    started = loop.time()
    stop_at = started + duration_s

    async def one(i: int) -> None:
        conn = _Conn(host, port)
        k = offset + i
        try:
            while loop.time() < stop_at:
                body = bodies[k % len(bodies)]
                k += concurrency
                t = time.perf_counter()
                try:
                    code = str(await asyncio.wait_for(conn.post(path, body), timeout=30))
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                    code = type(exc).__name__
                    await conn.close()
                latencies.append((time.perf_counter() - t) * 1000)
                statuses[code] = statuses.get(code, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(one(i) for i in range(concurrency)))
    elapsed = loop.time() - started
    ok = statuses.get("200", 0)
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        **{f"{k}_ms": v for k, v in percentiles(latencies, (50, 95, 99)).items()},
    }
