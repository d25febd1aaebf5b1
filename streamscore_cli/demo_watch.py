"""What ``streamscore demo`` watches while it runs: the output topics and the scorer's log file.

:class:`OutputReader` reads the predictions and dead letters of this run (end-to-end latency =
the prediction record's Kafka timestamp minus the event's ``event_time``); :class:`ScorerLog`
follows the scorer's JSON-lines log file and counts its warnings; :class:`LiveView` draws one
progress line on a terminal (a plain line every few seconds elsewhere) and, once per interval,
one summary line of what was dead-lettered and logged, instead of one line per batch.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from aiokafka import AIOKafkaConsumer

from schemas import DeadLetterHeader
from settings import Settings
from streams.audit import default_isolation
from streams.kafka_options import client_options
from streams.offsets import topic_partitions

RECENT_S = 2.0
"""The window of the live p99: predictions that arrived in the last two seconds."""


class OutputReader:
    """Counts input records, reads predictions and dead letters produced after it started."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self._kafka = settings.kafka
        self._run_id = run_id
        self._since_ms = int(time.time() * 1000)
        self.predictions: list[dict[str, Any]] = []
        self.latencies_ms: list[float] = []
        self.dead_letters: Counter[str] = Counter()
        self.sent = 0
        """Records that reached the input topic since the start (acknowledged by Kafka)."""
        self._recent: deque[tuple[float, float]] = deque()
        self._consumer = AIOKafkaConsumer(
            **client_options(settings.kafka),
            enable_auto_commit=False,
            isolation_level=default_isolation(settings),  # committed outputs only (exactly-once)
        )

    @property
    def outputs(self) -> int:
        return len(self.predictions) + self.dead_lettered

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    async def start(self) -> None:
        await self._consumer.start()
        topics = [self._kafka.input_topic, self._kafka.output_topic, self._kafka.dlq_topic]
        partitions = await topic_partitions(self._kafka, topics)
        if not partitions:
            raise RuntimeError(f"topics {topics} have no partitions in the cluster metadata")
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve positions now, before anything is produced
            await self._consumer.position(tp)

    async def read(self, timeout_ms: int = 200) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        now = time.monotonic()
        for tp, records in batches.items():
            if tp.topic == self._kafka.input_topic:
                self.sent += len(records)
                continue
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
                latency = record.timestamp - event_time.timestamp() * 1000
                self.latencies_ms.append(latency)
                self._recent.append((now, latency))
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent.popleft()

    def recent_p99_ms(self) -> float | None:
        """p99 end-to-end latency of the predictions read in the last :data:`RECENT_S`."""
        if not self._recent:
            return None
        return float(np.percentile([latency for _, latency in self._recent], 99))

    async def stop(self) -> None:
        await self._consumer.stop()


class ScorerLog:
    """Follows the scorer's log file; counts warnings and errors by their ``event`` field.

    Dead letters are left out (the dead-letter topic counts those, by kind); a line that is not
    JSON (a traceback, say) counts as ``unstructured``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.warnings: Counter[str] = Counter()

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        for line in chunk[:complete].splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                self.warnings["unstructured"] += 1
                continue
            if not isinstance(entry, dict) or entry.get("level") not in {"warning", "error"}:
                continue
            event = str(entry.get("event") or str(entry.get("msg", "?"))[:60])
            if event != "dead_letter":
                self.warnings[f"{entry['level']} {event!r}"] += 1

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


class LiveView:
    """The demo's terminal output while events flow (see the module docstring)."""

    def __init__(
        self, reader: OutputReader, log: ScorerLog, total: int, *, interval_s: float = 5.0
    ) -> None:
        self._reader, self._log, self._total = reader, log, total
        self._out: TextIO = sys.stdout
        self._tty = self._out.isatty()
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._last_line = self._last_interval = self._started
        self._rate_mark = (self._started, 0)
        self._rate = 0.0
        self._seen_dead = Counter[str]()
        log.read()  # what the scorer logged while starting is in its log, not on screen
        self._seen_warnings = Counter(log.warnings)
        self._drawn = False
        self._last_draw = 0.0

    def update(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if now - self._rate_mark[0] >= 1.0:
            self._rate = (self._reader.outputs - self._rate_mark[1]) / (now - self._rate_mark[0])
            self._rate_mark = (now, self._reader.outputs)
        if final or now - self._last_interval >= self._interval_s:
            self._interval(now)
        if self._tty and (final or now - self._last_draw >= 0.25):
            self._last_draw = now
            self._write("\r\x1b[2K" + self._line(now), end="")
            self._drawn = True
        elif not self._tty and (final or now - self._last_line >= 2.0):
            self._last_line = now
            self._write(self._line(now))
        if final and self._drawn:
            self._write("")
            self._drawn = False

    def _line(self, now: float) -> str:
        p99 = self._reader.recent_p99_ms()
        return (
            f"[{now - self._started:5.1f} s] sent {self._reader.sent:,}/{self._total:,} | "
            f"scored {len(self._reader.predictions):,} | "
            f"dead-lettered {self._reader.dead_lettered:,} | {self._rate:,.0f} events/s | "
            f"p99 (last {RECENT_S:.0f} s) " + ("-" if p99 is None else f"{p99:,.0f} ms")
        )

    def _interval(self, now: float) -> None:
        self._log.read()
        dead = self._reader.dead_letters - self._seen_dead
        warnings = self._log.warnings - self._seen_warnings
        parts = []
        if dead:
            parts.append(f"dead letters: {_counts(dead)}")
        if warnings:
            parts.append(f"scorer warnings: {_counts(warnings)} (see {self._log.path})")
        if parts:
            span = f"{self._last_interval - self._started:.1f}-{now - self._started:.1f} s"
            self._write(("\r\x1b[2K" if self._drawn else "") + f"  {span}: " + "; ".join(parts))
            self._drawn = False
        self._seen_dead = Counter(self._reader.dead_letters)
        self._seen_warnings = Counter(self._log.warnings)
        self._last_interval = now

    def _write(self, text: str, end: str = "\n") -> None:
        self._out.write(text + end)
        self._out.flush()
