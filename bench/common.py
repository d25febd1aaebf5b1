"""Shared helpers: child processes, /proc readings, Kafka offsets, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from settings import KafkaSettings
from streams.topics import partitions_of

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------ /proc
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds; NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in kB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) // 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_total,
        "python": sys.version.split()[0],
        "loadavg_at_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------ stats
def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, Any]:
    if not values:
        return {f"p{q:g}": None for q in qs}
    ordered = sorted(values)
    out: dict[str, Any] = {}
    for q in qs:
        # nearest-rank percentile
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        out[f"p{q:g}"] = round(ordered[rank - 1], 3)
    return out


# ------------------------------------------------------------------------------ workers
def _open_binary(path: Path) -> Any:
    return open(path, "wb")


@dataclass
class Worker:
    """A child process printing JSON lines (see :mod:`bench.workers`)."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    ticks: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_t: float = 0.0
    preloaded: list[dict[str, Any]] = field(default_factory=list)
    cpu_at_ready: float = 0.0
    peak_rss_kb: int = 0
    cpu_at_exit: float = math.nan
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        raw = _open_binary(self.log_path.with_suffix(".jsonl"))
        try:
            await self._read_lines(raw)
        finally:
            raw.close()

    async def _read_lines(self, raw: Any) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            raw.write(line)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("type") == "tick":
                self.ticks.append(msg)
                self.sample_memory()
            elif msg.get("type") == "preloaded":
                self.preloaded.append(msg)
            elif msg.get("type") == "ready":
                self.ready_t = float(msg["t"])
                self.cpu_at_ready = self.cpu()
                self.ready.set()

    async def preload(self, limit_s: float = 120.0) -> dict[str, Any]:
        """SIGUSR1 the streamscore worker: clear and reload its entity cache; wait for it."""
        before = len(self.preloaded)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + limit_s
        while len(self.preloaded) == before:
            if time.monotonic() > deadline or not self.alive:
                raise RuntimeError(f"worker {self.name} did not reload its cache: {self.log_path}")
            await asyncio.sleep(0.1)
        return self.preloaded[-1]

    def sample_memory(self) -> None:
        hwm = memory_kb(self.pid).get("VmHWM", 0)
        self.peak_rss_kb = max(self.peak_rss_kb, hwm)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def wait_ready(self, limit_s: float) -> None:
        waiter = asyncio.create_task(self.ready.wait())
        died = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, died}, timeout=limit_s, return_when="FIRST_COMPLETED")
        waiter.cancel()
        died.cancel()
        if not self.ready.is_set():
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.name} not ready after {limit_s}s:\n{tail}")

    def lags_between(self, t0: float, t1: float, skip_first: bool = False) -> list[float]:
        out: list[float] = []
        first = True
        for tick in self.ticks:
            # a tick carries the samples of the preceding tick interval
            if t0 < tick["t"] <= t1 + 0.5:
                if first and skip_first:
                    first = False
                    continue
                out.extend(tick["lag"])
        return out

    def stats_at(self, t: float) -> dict[str, Any]:
        """The last tick's counters at or before ``t`` (empty before the first)."""
        best: dict[str, Any] = {}
        for tick in self.ticks:
            if tick["t"] <= t:
                best = tick
            else:
                break
        return best

    async def stop(self, limit_s: float = 40.0) -> None:
        if self.alive:
            self.sample_memory()
            self.cpu_at_exit = self.cpu()
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=limit_s)
            except TimeoutError:
                log(f"worker {self.name} ignored SIGTERM for {limit_s}s; killing pid {self.pid}")
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, timeout=5)


async def start_worker(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> Worker:
    log_path = log_dir / f"{name}.log"
    log_file = _open_binary(log_path)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(ROOT),
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=log_file,
        stdin=asyncio.subprocess.DEVNULL,
    )
    log_file.close()
    worker = Worker(name, proc, log_path)
    worker._reader = asyncio.create_task(worker._read())
    return worker


# ------------------------------------------------------------------------------ kafka
class Offsets:
    """End offsets of topics and committed offsets of groups (one admin client)."""

    def __init__(self, bootstrap: str) -> None:
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="bench-offsets"
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._consumer.stop()
        with contextlib.suppress(Exception):
            await self._admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        known = await partitions_of(self.kafka, [topic])
        return [TopicPartition(topic, p) for p in known[topic]]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        tps = await self.partitions(topic)
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: int(off) for tp, off in ends.items()}

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        raw = await self._admin.list_consumer_group_offsets(group)
        return {tp.partition: int(meta.offset) for tp, meta in raw.items() if tp.topic == topic}

    async def precommit(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Store ``offsets`` for ``group`` so that a new member starts right there."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            client_id="bench-precommit",
        )
        await consumer.start()
        try:
            tps = {TopicPartition(topic, p): off for p, off in offsets.items()}
            consumer.assign(list(tps))
            await consumer.commit(tps)
        finally:
            await consumer.stop()

    async def groups_with_prefix(self, prefix: str) -> list[str]:
        return [
            str(g[0])
            for g in await self._admin.list_consumer_groups()
            if str(g[0]).startswith(prefix)
        ]

    async def delete_groups(self, groups: list[str]) -> int:
        """Delete consumer groups (aiokafka's admin client has no public call for it: a
        DeleteGroups request to each group's coordinator). Returns how many were deleted."""
        from aiokafka.protocol.admin import DeleteGroupsRequest

        deleted = 0
        for group in groups:
            with contextlib.suppress(Exception):
                node = await self._admin.find_coordinator(group)
                response = await self._admin._send_request(DeleteGroupsRequest([group]), node)
                deleted += sum(1 for _, error in response.results if error == 0)
        return deleted

    async def delete_topics(self, topics: list[str]) -> list[str]:
        existing = set(await self._admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await self._admin.delete_topics(doomed)
        return doomed


def total(offsets: dict[int, int]) -> int:
    return sum(offsets.values())


def progress(committed: dict[int, int], base: dict[int, int], target: dict[int, int]) -> int:
    """Records committed past ``base``, counting each partition up to ``target`` at most."""
    return sum(max(0, min(committed.get(p, 0), target[p]) - base.get(p, 0)) for p in target)
