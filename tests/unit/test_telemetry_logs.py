"""Process-wide logging helpers: the throttled warning."""

from __future__ import annotations

import logging

import pytest

from telemetry.logs import RepeatsDropped, ThrottledLog


def test_one_warning_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = logging.getLogger("tests.throttled")
    throttled = ThrottledLog(log, every_s=5.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="tests.throttled")
    for _ in range(50):
        throttled.warning("outage", "MongoDB unavailable: %s", "down")
    throttled.warning("timeout", "scoring timed out")
    now[0] += 4.9
    throttled.warning("outage", "MongoDB unavailable: %s", "down")
    now[0] += 0.1
    throttled.warning("outage", "MongoDB unavailable: %s", "still down")
    lines = [(r.getMessage(), getattr(r, "event", None)) for r in caplog.records]
    assert lines == [
        ("MongoDB unavailable: down", "outage"),
        ("scoring timed out", "timeout"),
        ("MongoDB unavailable: still down", "outage"),
    ]


def test_repeats_of_one_message_pass_once_per_interval() -> None:
    now = [0.0]
    repeats = RepeatsDropped(60.0, clock=lambda: now[0])

    def record(topic: str) -> logging.LogRecord:
        return logging.LogRecord(
            "aiokafka.cluster", logging.ERROR, "", 0, "Topic %s not found", (topic,), None
        )

    assert repeats.filter(record("a"))
    assert not repeats.filter(record("a"))
    assert repeats.filter(record("b"))  # another text: its own interval
    now[0] = 59.9
    assert not repeats.filter(record("a"))
    now[0] = 60.0
    assert repeats.filter(record("a"))
