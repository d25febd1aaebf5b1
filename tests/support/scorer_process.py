"""Running ``streamscore run`` as a real process for tests that kill, stop or restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from settings import Settings
from settings.env import ENV_PREFIX, to_env

ROOT = Path(__file__).resolve().parents[2]


def scorer_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process use exactly ``settings`` (every field), with
    a shorter session timeout, INFO logs and, for settings without a metrics port, an
    ephemeral one; ``extra`` variables win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        to_env(
            settings,
            kafka__session_timeout_ms=6000,
            stream__metrics_port=settings.stream.metrics_port or 0,
            log_level="INFO",
        )
    )
    env.update(extra)
    return env


class ScorerProcess:
    """``python -m streamscore_cli run [--workers N]`` with its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path, workers: int = 1, **env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.workers = workers
        self.env = scorer_env(settings, **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ScorerProcess:
        args = [sys.executable, "-m", "streamscore_cli", "run"]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int | None:
        if not self.alive():
            return None if self.process is None else self.process.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Worker pids (for ``--workers``): processes whose parent is this one."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.pid:
                found.append(int(entry.name))
        return sorted(found)

    def wait_for_log(self, text: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive():
                return False
            time.sleep(0.2)
        return False
