"""``streamscore run --workers N``: N scorer processes in one consumer group on one machine."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from settings import Settings
from settings.env import to_env
from streams import early_stop
from streams.exit_codes import FATAL_EXIT_CODES, ExitCode

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "streamscore_cli", "run")
"""One scorer process: the command line's ``run``, so each worker logs and exits like one."""


def restart_backoff(restarts: int, ran_for_s: float) -> float:
    """Seconds before restarting a worker that died after ``restarts`` earlier restarts:
    0.5 s doubling per restart up to 30 s, or 0.5 s again once it ran fine for a minute."""
    if ran_for_s > 60:
        return 0.5
    return min(30.0, 0.5 * 2.0 ** min(restarts, 6))


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


class Supervisor:
    """Starts N workers, restarts one that dies, and stops them all on SIGTERM/SIGINT.

    It guarantees:
    1. Each worker is a separate process (own event loop, executor and connections) in the
       same consumer group; Kafka spreads the partitions across them.
    2. A worker that exits unexpectedly is restarted (after a short backoff that grows if it
       keeps dying); one that exits with a fatal :class:`ExitCode` (configuration or model, a
       dead-letter flood, an unreadable record, a repeated failure) stops the whole group
       with that code.
    3. SIGTERM/SIGINT is passed to every worker, each finishes its batch in hand and commits;
       a worker still running after the shutdown timeout is killed. A worker waiting for its
       restart is not started any more: the group stops at once.
    """

    def __init__(
        self, settings: Settings, workers: int, command: Sequence[str] = WORKER_COMMAND
    ) -> None:
        self._settings = settings
        self._count = workers
        self._command = list(command)
        self._workers: dict[int, Worker] = {}
        self._stopping = False
        self.exit_code: int = ExitCode.OK

    def _spawn(self, index: int, restarts: int = 0) -> Worker:
        """A worker with the supervisor's own settings, as one process of the group."""
        port = self._settings.stream.metrics_port
        env = dict(os.environ) | to_env(
            self._settings,
            stream__workers=1,
            kafka__client_id=f"{self._settings.kafka.client_id}-{index}",
            stream__metrics_port=None if port is None else (port + index if port else 0),
        )
        process = subprocess.Popen(self._command, env=env)
        log.info("worker %d started (pid %d)", index, process.pid)
        return Worker(index, process, restarts=restarts)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, self._count)
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if early_stop.held():  # a SIGTERM before these handlers: start no worker
            return self.exit_code
        for index in range(self._count):
            self._workers[index] = self._spawn(index)
        due: dict[int, float] = {}
        """Workers waiting for their restart: index -> when (the loop keeps watching the
        others, and a signal meanwhile stops the group without restarting anyone)."""
        while not self._stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for index, worker in list(self._workers.items()):
                if index in due:
                    if now >= due[index] and not self._stopping:
                        del due[index]
                        self._workers[index] = self._spawn(index, worker.restarts + 1)
                    continue
                code = worker.process.poll()
                if code is None:
                    continue
                if code in FATAL_EXIT_CODES:
                    log.error("worker %d exited with fatal code %d: stopping all", index, code)
                    self.exit_code = code
                    self._stopping = True
                    break
                backoff = restart_backoff(worker.restarts, now - worker.started)
                log.warning(
                    "worker %d (pid %d) exited with code %d: restarting in %.1fs",
                    index,
                    worker.process.pid,
                    code,
                    backoff,
                )
                due[index] = now + backoff
        self._stop_all()
        return self.exit_code

    def _stop_all(self) -> None:
        for worker in self._workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.stream.shutdown_timeout_s + 10
        for worker in self._workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                worker.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time: killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
