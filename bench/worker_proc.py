"""A worker process as the bench sees it: started, read, paused, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import protocol
from bench.protocol import Preloaded, ScorerCounters, Tick
from bench.sysinfo import cpu_seconds, memory_kb

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)


@dataclass
class Worker:
    """A child process printing :mod:`bench.protocol` lines on its stdout."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    ticks: list[Tick] = field(default_factory=list)
    preloaded: list[Preloaded] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_t: float = 0.0
    cpu_at_ready: float = 0.0
    peak_rss_kb: int = 0
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def sample_memory(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, memory_kb(self.pid).get("VmHWM", 0))

    async def read(self) -> None:
        stdout = self.proc.stdout
        if stdout is None:
            return
        with self.log_path.with_suffix(".jsonl").open("wb") as raw:
            while line := await stdout.readline():
                raw.write(line)
                msg = protocol.parse(line)
                if isinstance(msg, Tick):
                    self.ticks.append(msg)
                    self.sample_memory()
                elif isinstance(msg, Preloaded):
                    self.preloaded.append(msg)
                elif msg is not None and msg[0] == "ready":
                    self.ready_t = msg[1]
                    self.cpu_at_ready = self.cpu()
                    self.ready.set()

    async def wait_ready(self, limit_s: float) -> None:
        waiter = asyncio.create_task(self.ready.wait())
        died = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, died}, timeout=limit_s, return_when="FIRST_COMPLETED")
        waiter.cancel()
        died.cancel()
        if not self.ready.is_set():
            raise RuntimeError(f"worker {self.name} not ready after {limit_s}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(f"worker {self.name} exited: see {self.log_path}")

    async def preload(self, limit_s: float = 120.0) -> Preloaded:
        """SIGUSR1 the scorer worker: clear and reload its entity cache; wait for it."""
        before = len(self.preloaded)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + limit_s
        while len(self.preloaded) == before:
            if time.monotonic() > deadline or not self.alive:
                raise RuntimeError(f"worker {self.name} did not reload its cache: {self.log_path}")
            await asyncio.sleep(0.1)
        return self.preloaded[-1]

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def lags_between(self, t0: float, t1: float, skip_first: bool = False) -> list[float]:
        """Loop-lag samples (ms) of the ticks in (t0, t1 + 0.5]; a tick carries the samples of
        the interval before it. ``skip_first``: after a SIGCONT the first holds the pause."""
        ticks = [tick for tick in self.ticks if t0 < tick.t <= t1 + 0.5]
        if skip_first:
            ticks = ticks[1:]
        return [lag for tick in ticks for lag in tick.lag_ms]

    def counters_at(self, t: float) -> ScorerCounters:
        """The scorer counters of the last tick at or before ``t`` (zeros before the first)."""
        best = ScorerCounters()
        for tick in self.ticks:
            if tick.t > t:
                break
            if tick.scorer is not None:
                best = tick.scorer
        return best

    def assigned_last(self, n: int) -> list[int]:
        return [tick.assigned for tick in self.ticks[-n:]]

    async def stop(self, limit_s: float = 40.0) -> None:
        if self.alive:
            self.sample_memory()
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=limit_s)
            except TimeoutError:
                log(f"worker {self.name} ignored SIGTERM for {limit_s}s; killing pid {self.pid}")
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, timeout=5)


async def start_worker(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> Worker:
    """Start ``argv`` in the project root with ``env`` over this process's environment;
    stderr goes to ``<log_dir>/<name>.log``, the protocol lines to ``<name>.jsonl``."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(ROOT),
            env=full_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
        )
    worker = Worker(name, proc, log_path)
    worker.reader = asyncio.create_task(worker.read())
    return worker
