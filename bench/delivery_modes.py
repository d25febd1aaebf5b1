"""At-least-once against exactly-once, side by side in one run.

For each delivery mode, on fresh topics and a fresh group, with the same batch sizes:

1. throughput: N events already in the input topic; the scorer (in this process) drains them;
   events per second until the group's committed lag is 0;
2. end-to-end latency at a fixed offered rate (half of at-least-once's throughput measured in
   step 1): a paced producer writes events without ``event_time`` (so each prediction carries
   the record's timestamp), a ``read_committed`` reader notes when each prediction arrives.

Usage: ``python -m bench.delivery_modes [--events 60000] [--seconds 15] [--runs 3]``. Addresses
come from the product's settings (``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``,
``STREAMSCORE_MONGO__URL``, ``STREAMSCORE_MODEL__PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from settings import Settings, load_settings
from streams.app import build_app
from streams.offsets import end_offsets, topic_partitions
from streams.offsets import lag as partition_lag
from streams.topics import ensure_topics

MODES = ("at_least_once", "exactly_once")
RESULTS = Path(__file__).parent / "results" / "delivery_modes.json"


@dataclass(frozen=True)
class ModeResult:
    mode: str
    events_per_s: float
    offered_rate: float
    latency_p50_ms: float
    latency_p99_ms: float


def settings_for(base: Settings, mode: str) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return load_settings(
        kafka={
            "bootstrap_servers": base.kafka.bootstrap_servers,
            "input_topic": f"bench-events-{suffix}",
            "output_topic": f"bench-predictions-{suffix}",
            "dlq_topic": f"bench-dlq-{suffix}",
            "group_id": f"bench-{mode}-{suffix}",
        },
        mongo={"url": base.mongo.url.get_secret_value()},
        model={"path": base.model.path},
        stream={"delivery": mode, "metrics_port": None, "max_batch_size": 500},
    )


def event(i: int) -> bytes:
    return json.dumps(
        {"event_id": f"b-{i}", "entity_id": f"user-{i % 20_000:06d}", "features": {"amount": 5.0}}
    ).encode()


async def produce(settings: Settings, count: int, rate: float | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        for i in range(count):
            await producer.send(settings.kafka.input_topic, event(i))
            if rate is not None and i % 100 == 99:
                ahead = started + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def uncommitted(watcher: AIOKafkaConsumer, settings: Settings) -> int:
    """Input records the scorer's group has not committed yet."""
    tps = await topic_partitions(settings.kafka, [settings.kafka.input_topic])
    ends = await end_offsets(watcher, tps)
    committed = {tp: await watcher.committed(tp) for tp in tps}
    return sum(partition_lag(ends, committed).values())


async def throughput(settings: Settings, events: int) -> float:
    kafka = settings.kafka
    await ensure_topics(kafka)
    await produce(settings, events)
    watcher = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.group_id, enable_auto_commit=False
    )
    await watcher.start()
    app, _, _ = build_app(settings)
    started = time.monotonic()
    await app.start()
    try:
        while True:  # polls the broker: there is no event to wait on
            if await uncommitted(watcher, settings) == 0:
                return events / (time.monotonic() - started)
            await asyncio.sleep(0.25)
    finally:
        await app.stop()
        await watcher.stop()


async def latency(settings: Settings, rate: float, seconds: float) -> tuple[float, float]:
    await ensure_topics(settings.kafka)
    count = int(rate * seconds)
    reader = AIOKafkaConsumer(
        settings.kafka.output_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await reader.start()
    app, _, _ = build_app(settings)
    await app.start()
    delays: list[float] = []
    try:
        producing = asyncio.create_task(produce(settings, count, rate))
        deadline = time.monotonic() + seconds + 60
        while len(delays) < count and time.monotonic() < deadline:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                now = time.time()
                for record in batch:
                    sent = datetime.fromisoformat(json.loads(record.value)["event_time"])
                    delays.append((now - sent.timestamp()) * 1000)
        await producing
    finally:
        await app.stop()
        await reader.stop()
    delays.sort()
    return statistics.median(delays), delays[int(len(delays) * 0.99) - 1]


async def run(events: int, seconds: float, runs: int) -> list[ModeResult]:
    base = load_settings()
    rates = {
        mode: [await throughput(settings_for(base, mode), events) for _ in range(runs)]
        for mode in MODES
    }
    offered = statistics.median(rates["at_least_once"]) / 2
    results = []
    for mode in MODES:
        p50, p99 = await latency(settings_for(base, mode), offered, seconds)
        results.append(ModeResult(mode, statistics.median(rates[mode]), offered, p50, p99))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(run(args.events, args.seconds, args.runs))
    alo, eos = results
    print(f"{'mode':<15}{'events/s':>10}{'offered/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(
            f"{r.mode:<15}{r.events_per_s:>10.0f}{r.offered_rate:>11.0f}"
            f"{r.latency_p50_ms:>9.1f}{r.latency_p99_ms:>9.1f}"
        )
    ratio, p99_ratio = eos.events_per_s / alo.events_per_s, eos.latency_p99_ms / alo.latency_p99_ms
    print(f"exactly-once / at-least-once: throughput {ratio:.0%}, p99 latency {p99_ratio:.2f}x")
    RESULTS.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
