"""``streamscore demo``: train if needed, seed, run the scorer on a burst of events, summarise.

The scorer runs as a child process whose log goes to a file (its path is printed); the terminal
shows one live progress line and a per-interval summary of dead letters and scorer warnings
(see :mod:`streamscore_cli.demo_watch`). ``python -m streamscore_cli.demo peek TOPIC [N]`` prints
the last ``N`` records of a topic, as the summary suggests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from settings import Settings, load_settings
from settings.env import to_env
from streams.audit import default_isolation
from streams.kafka_options import client_options
from streams.offsets import end_offsets, tail_start, topic_partitions, unread
from streams.topics import ensure_topics, group_state
from streamscore_cli.demo_watch import LiveView, OutputReader, ScorerLog
from streamscore_cli.produce import produce
from streamscore_cli.seed import seed
from streamscore_cli.train import train


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


LOG_PATH = Path(".local") / "demo" / "scorer.log"
"""Where the demo's scorer writes its log (relative to the working directory, replaced per run)."""


def _metrics_hint(settings: Settings) -> str:
    """How to read the scorer's metrics, at the address its settings give."""
    stream = settings.stream
    if stream.metrics_port is None:
        return "off (STREAMSCORE_STREAM__METRICS_PORT is empty)"
    host = stream.metrics_host
    host = "127.0.0.1" if host in {"0.0.0.0", ""} else f"[{host}]" if ":" in host else host
    return (
        f"streamscore run, then curl -s http://{host}:{stream.metrics_port}"
        "/metrics | grep ^streamscore_"
    )


def _look_further(settings: Settings, log_path: Path) -> str:
    kafka = settings.kafka
    rows = [
        ("scorer log", f"less {log_path}   (JSON lines: ready, dead_letter, retry, ...)"),
        ("audit", "streamscore audit   (every event: one prediction or one dead letter?)"),
        ("metrics", _metrics_hint(settings)),
        ("read topics", f"python -m streamscore_cli.demo peek {kafka.output_topic} 3"),
        ("", f"python -m streamscore_cli.demo peek {kafka.dlq_topic} 3   (with the headers)"),
        ("", f"(input: {kafka.input_topic}; Kafka on {kafka.bootstrap_servers})"),
    ]
    return "\n".join(
        ["", "look further (from .venv/bin, or after `source .venv/bin/activate`)"]
    ) + ("\n" + "\n".join(f"  {name:<13}{text}" for name, text in rows))


async def _wait_until_consuming(settings: Settings, scorer: asyncio.subprocess.Process) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and scorer.returncode is None:
        try:
            state, members = await group_state(settings.kafka, settings.kafka.group_id)
        except KafkaError:  # no group coordinator yet (a fresh broker): ask again
            state, members = "", 0
        if state == "Stable" and members > 0:
            return True
        await asyncio.sleep(0.5)
    return False


async def _watch(
    reader: OutputReader,
    view: LiveView,
    sending: asyncio.Task[int],
    scorer: asyncio.subprocess.Process,
) -> int:
    """Read outputs and redraw until every sent event has an output (or 120 s after the last)."""
    deadline: float | None = None
    while True:
        await reader.read()
        view.update()
        if sending.done():
            sent = sending.result()
            deadline = deadline or time.monotonic() + 120
            if reader.outputs >= sent or time.monotonic() > deadline:
                view.update(final=True)
                return sent
        if scorer.returncode is not None:
            view.update(final=True)
            raise RuntimeError(f"the scorer exited with code {scorer.returncode}")


async def _prepare(settings: Settings) -> None:
    """Train the demo model if there is none, seed the entities, create the topics."""
    if not settings.model.path.exists():
        print(f"no model at {settings.model.path}: training the demo model (about a minute)")
        auc = train(settings.model.path)
        print(f"held-out AUC {auc:.4f}")
    count = await seed(settings.mongo)
    print(f"seeded {count} entities into {settings.mongo.database}.{settings.mongo.collection}")
    await ensure_topics(settings.kafka)


async def _stop(scorer: asyncio.subprocess.Process) -> None:
    if scorer.returncode is None:
        scorer.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(scorer.wait(), timeout=60)
        except TimeoutError:
            scorer.kill()
    print(f"scorer stopped (exit code {scorer.returncode})")


async def demo(settings: Settings, *, events: int, rate: float) -> int:
    await _prepare(settings)
    run_id = f"demo{int(time.time())}"
    reader = OutputReader(settings, run_id)
    await reader.start()
    LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
    log = ScorerLog(LOG_PATH.resolve())
    print(f"starting the scorer; its log: {LOG_PATH}")
    with log.path.open("wb") as log_file:
        scorer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamscore_cli",
            "run",
            env={**os.environ, **to_env(settings)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        if not await _wait_until_consuming(settings, scorer):
            print(
                "the scorer did not join its consumer group within 60 s; its log ends:",
                file=sys.stderr,
            )
            print(log.tail(), file=sys.stderr)
            return 1
        print(f"sending {events:,} events at {rate:,.0f}/s (5% unknown entities, 1% malformed)")
        started = time.monotonic()
        view = LiveView(reader, log, events)
        sending = asyncio.create_task(
            produce(
                settings.kafka, events, rate=rate, run_id=run_id, bad_ratio=0.01, progress=False
            )
        )
        try:
            sent = await _watch(reader, view, sending, scorer)
        except RuntimeError as exc:
            print(f"{exc}; its log ends:\n{log.tail()}", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        print(_summary(reader, sent, elapsed))
        print(_look_further(settings, LOG_PATH))
        if reader.outputs < sent:
            print(
                f"\nonly {reader.outputs} of {sent} outputs arrived within 120 s", file=sys.stderr
            )
            return 1
        return 0
    finally:
        await reader.stop()
        await _stop(scorer)


class NoSuchTopic(LookupError):
    """The topic to peek at does not exist."""


async def peek(settings: Settings, topic: str, count: int) -> list[str]:
    """The last ``count`` records of ``topic`` (all partitions), one line each, with headers.
    Raises :class:`NoSuchTopic` when there is no such topic."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        enable_auto_commit=False,
        isolation_level=default_isolation(settings),
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(settings.kafka, [topic])
        if not partitions:
            raise NoSuchTopic(f"topic {topic} does not exist")
        consumer.assign(partitions)
        ends = await end_offsets(consumer, partitions)
        for tp in partitions:
            consumer.seek(tp, tail_start(ends[tp], count))
        records = []
        while await unread(consumer, ends):
            for batch in (await consumer.getmany(timeout_ms=1_000)).values():
                records.extend(batch)
        records.sort(key=lambda r: r.timestamp)
        lines = []
        for r in records[-count:]:
            value = r.value.decode(errors="replace") if r.value is not None else None
            # As pairs, in order: a record may repeat a header name; a value may be null or empty.
            headers = [[k, None if v is None else v.decode(errors="replace")] for k, v in r.headers]
            lines.append(
                json.dumps(
                    {
                        "partition": r.partition,
                        "offset": r.offset,
                        "key": r.key and r.key.decode(errors="replace"),
                        "value": value,
                    }
                    | ({"headers": headers} if headers else {})
                )
            )
        return lines
    finally:
        await consumer.stop()


def _peek_main(argv: list[str]) -> int:
    usage = "usage: python -m streamscore_cli.demo peek TOPIC [COUNT]"
    if len(argv) not in (2, 3) or argv[0] != "peek":
        print(usage, file=sys.stderr)
        return 2
    count = argv[2] if len(argv) == 3 else "3"
    if not count.isdigit() or int(count) < 1:
        print(
            f"{usage}\nCOUNT must be a whole number of at least 1, got {count!r}", file=sys.stderr
        )
        return 2
    try:
        found = asyncio.run(peek(load_settings(), argv[1], int(count)))
    except NoSuchTopic as exc:
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(_peek_main(sys.argv[1:]))
