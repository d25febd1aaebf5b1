"""``streamscore demo``: train if needed, seed, run the scorer on a burst of events, summarise."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import DeadLetterHeader
from settings import Settings
from streams.kafka_options import client_options
from streams.topics import ensure_topics, group_state, partitions_of
from streamscore_cli.produce import produce
from streamscore_cli.seed import seed
from streamscore_cli.train import train


class OutputReader:
    """Reads predictions and dead letters produced after it started, from every partition."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self._kafka = settings.kafka
        self._run_id = run_id
        self._since_ms = int(time.time() * 1000)
        self.predictions: list[dict[str, Any]] = []
        self.latencies_ms: list[float] = []
        self.dead_letters: Counter[str] = Counter()
        self._consumer = AIOKafkaConsumer(
            **client_options(settings.kafka), enable_auto_commit=False
        )

    async def start(self) -> None:
        await self._consumer.start()
        topics = [self._kafka.output_topic, self._kafka.dlq_topic]
        known = await partitions_of(self._kafka, topics)
        partitions = [TopicPartition(topic, p) for topic in topics for p in known[topic]]
        if not partitions:
            raise RuntimeError(f"topics {topics} have no partitions in the cluster metadata")
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve positions now, before anything is produced
            await self._consumer.position(tp)

    async def read(self, timeout_ms: int = 500) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in batches.items():
            for record in records:
                if tp.topic == self._kafka.dlq_topic:
                    headers = dict(record.headers)
                    source_ts = headers.get(DeadLetterHeader.SOURCE_TIMESTAMP, b"0").decode()
                    if int(source_ts or 0) < self._since_ms:
                        continue  # a dead letter from an earlier run
                    kind = headers.get(DeadLetterHeader.ERROR_KIND, b"?").decode()
                    self.dead_letters[kind] += 1
                    continue
                prediction = json.loads(record.value)
                if not str(prediction.get("event_id", "")).startswith(self._run_id):
                    continue
                self.predictions.append(prediction)
                event_time = datetime.fromisoformat(prediction["event_time"])
                self.latencies_ms.append(record.timestamp - event_time.timestamp() * 1000)

    async def stop(self) -> None:
        await self._consumer.stop()


def _summary(reader: OutputReader, sent: int, seconds: float) -> str:
    scores = np.array([p["score"] for p in reader.predictions], dtype=np.float64)
    enrichment = Counter(p["enrichment"] for p in reader.predictions)
    lat = np.array(reader.latencies_ms or [float("nan")])
    lines = [
        "",
        "streamscore demo summary",
        "------------------------",
        f"events sent            {sent}",
        f"predictions            {len(reader.predictions)}",
        f"  enrichment hit       {enrichment.get('hit', 0)}",
        f"  enrichment miss      {enrichment.get('miss', 0)}",
        f"dead letters           {sum(reader.dead_letters.values())}"
        + (f"  ({dict(reader.dead_letters)})" if reader.dead_letters else ""),
        f"wall time              {seconds:.1f} s",
        f"end-to-end latency     p50 {np.percentile(lat, 50):.1f} ms, "
        f"p99 {np.percentile(lat, 99):.1f} ms",
    ]
    if len(scores):
        quantiles = np.percentile(scores, [1, 25, 50, 75, 99])
        lines.append(
            "score quantiles        "
            + ", ".join(
                f"p{q} {v:.4f}" for q, v in zip([1, 25, 50, 75, 99], quantiles, strict=True)
            )
        )
        edges = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
        counts, _ = np.histogram(scores, bins=edges)
        for lo, hi, n in zip(edges, edges[1:], counts, strict=False):
            bar = "#" * int(40 * n / max(len(scores), 1))
            lines.append(f"  score {lo:.2f}-{hi:.2f}    {n:6d} {bar}")
    return "\n".join(lines)


async def _wait_until_consuming(settings: Settings, scorer: asyncio.subprocess.Process) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and scorer.returncode is None:
        state, members = await group_state(settings.kafka, settings.kafka.group_id)
        if state == "Stable" and members > 0:
            return True
        await asyncio.sleep(0.5)
    return False


async def demo(settings: Settings, *, events: int, rate: float) -> int:
    if not settings.model.path.exists():
        print(f"no model at {settings.model.path}: training the demo model (about a minute)")
        auc = train(settings.model.path)
        print(f"held-out AUC {auc:.4f}")
    count = await seed(settings.mongo)
    print(f"seeded {count} entities into {settings.mongo.database}.{settings.mongo.collection}")
    await ensure_topics(settings.kafka)

    run_id = f"demo{int(time.time())}"
    reader = OutputReader(settings, run_id)
    await reader.start()
    scorer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamscore_cli.main", "run", env=dict(os.environ)
    )
    try:
        if not await _wait_until_consuming(settings, scorer):
            print("the scorer did not join its consumer group within 60 s", file=sys.stderr)
            return 1
        started = time.monotonic()
        sent = await produce(settings.kafka, events, rate=rate, run_id=run_id, bad_ratio=0.01)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await reader.read()
            if len(reader.predictions) + sum(reader.dead_letters.values()) >= sent:
                break
            if scorer.returncode is not None:
                print(f"the scorer exited with code {scorer.returncode}", file=sys.stderr)
                return 1
        elapsed = time.monotonic() - started
        print(_summary(reader, sent, elapsed))
        done = len(reader.predictions) + sum(reader.dead_letters.values())
        if done < sent:
            print(f"\nonly {done} of {sent} outputs arrived within 120 s", file=sys.stderr)
            return 1
        return 0
    finally:
        await reader.stop()
        if scorer.returncode is None:
            scorer.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(scorer.wait(), timeout=60)
            except TimeoutError:
                scorer.kill()
        print(f"scorer stopped (exit code {scorer.returncode})")
