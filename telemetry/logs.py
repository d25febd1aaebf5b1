"""Logging for every streamscore process: JSON lines (one event per line) for machines, plain
text in a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", json_lines: bool | None = None) -> None:
    """Configure the root logger once: JSON lines unless stderr is a terminal."""
    use_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines()
        if use_json
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "pymongo", "faststream.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiokafka says "Topic X not found in cluster metadata" on every metadata refresh (10 a
    # second) while an output topic is missing: once a minute per topic is enough.
    cluster = logging.getLogger("aiokafka.cluster")
    if not any(isinstance(f, RepeatsDropped) for f in cluster.filters):
        cluster.addFilter(RepeatsDropped(60.0))


class RepeatsDropped(logging.Filter):
    """Lets a message through once per ``every_s`` (the same text, arguments included)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text, now = record.getMessage(), self._clock()
        if now - self._last.get(text, -self._every_s) < self._every_s:
            return False
        if len(self._last) > 1_000:  # many distinct texts: forget them rather than grow
            self._last.clear()
        self._last[text] = now
        return True


class ThrottledLog:
    """Logs one warning per kind per ``every_s`` at most: an outage must not flood the log with
    a line per request."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last.get(kind, -self._every_s) >= self._every_s:
            self._last[kind] = now
            self._logger.warning(message, *args, extra={"event": kind})
