"""Running ``streamscore run`` as a real process for tests that kill, stop or restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def scorer_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process use exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    kafka, mongo, stream = settings.kafka, settings.mongo, settings.stream
    env.update(
        {
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "STREAMSCORE_KAFKA__INPUT_TOPIC": kafka.input_topic,
            "STREAMSCORE_KAFKA__OUTPUT_TOPIC": kafka.output_topic,
            "STREAMSCORE_KAFKA__DLQ_TOPIC": kafka.dlq_topic,
            "STREAMSCORE_KAFKA__GROUP_ID": kafka.group_id,
            "STREAMSCORE_KAFKA__TOPIC_PARTITIONS": str(kafka.topic_partitions),
            "STREAMSCORE_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMSCORE_MONGO__URL": mongo.url.get_secret_value(),
            "STREAMSCORE_MONGO__DATABASE": mongo.database,
            "STREAMSCORE_MONGO__SERVER_SELECTION_TIMEOUT_MS": str(
                mongo.server_selection_timeout_ms
            ),
            "STREAMSCORE_MONGO__OPERATION_TIMEOUT_MS": str(mongo.operation_timeout_ms),
            "STREAMSCORE_SCORING__CACHE_ENABLED": str(settings.scoring.cache_enabled).lower(),
            "STREAMSCORE_SCORING__CACHE_TTL_S": str(settings.scoring.cache_ttl_s),
            "STREAMSCORE_SCORING__SCORE_WITHOUT_FEATURES_ON_ERROR": str(
                settings.scoring.score_without_features_on_error
            ).lower(),
            "STREAMSCORE_KAFKA__CREATE_TOPICS": str(kafka.create_topics).lower(),
            "STREAMSCORE_KAFKA__REQUEST_TIMEOUT_MS": str(kafka.request_timeout_ms),
            "STREAMSCORE_KAFKA__DELIVERY_TIMEOUT_S": str(kafka.delivery_timeout_s),
            "STREAMSCORE_STREAM__MAX_RECORD_BYTES": str(stream.max_record_bytes),
            "STREAMSCORE_MODEL__PATH": str(settings.model.path),
            "STREAMSCORE_MODEL__RELOAD_INTERVAL_S": str(settings.model.reload_interval_s),
            "STREAMSCORE_STREAM__MAX_BATCH_SIZE": str(stream.max_batch_size),
            "STREAMSCORE_STREAM__MAX_BATCH_WAIT_MS": str(stream.max_batch_wait_ms),
            "STREAMSCORE_STREAM__RETRY_INITIAL_BACKOFF_S": str(stream.retry_initial_backoff_s),
            "STREAMSCORE_STREAM__RETRY_MAX_BACKOFF_S": str(stream.retry_max_backoff_s),
            "STREAMSCORE_STREAM__SHUTDOWN_TIMEOUT_S": str(stream.shutdown_timeout_s),
            "STREAMSCORE_STREAM__METRICS_PORT": str(stream.metrics_port or 0),
            "STREAMSCORE_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


class ScorerProcess:
    """``python -m streamscore_cli.main run [--workers N]`` with its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path, workers: int = 1, **env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.workers = workers
        self.env = scorer_env(settings, **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ScorerProcess:
        args = [sys.executable, "-m", "streamscore_cli.main", "run"]
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
