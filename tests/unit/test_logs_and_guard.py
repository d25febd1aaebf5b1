"""Structured logs and the dead-letter flood guard."""

from __future__ import annotations

import json
import logging

import pytest

from streams.dead_letter_guard import DeadLetterFlood, DeadLetterGuard
from streamscore_cli.logs import JsonLines


def test_json_lines_carry_extra_fields_on_one_line() -> None:
    record = logging.makeLogRecord(
        {
            "name": "streams.batch_processor",
            "levelname": "WARNING",
            "msg": "dead-lettered %d of %d records\nsecond line",
            "args": (2, 10),
            "event": "dead_letter",
            "partition": 3,
        }
    )
    line = JsonLines().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "streams.batch_processor"
    assert entry["msg"].startswith("dead-lettered 2 of 10 records")
    assert entry["event"] == "dead_letter"
    assert entry["partition"] == 3
    assert entry["ts"].endswith("+00:00")


def test_guard_lets_ordinary_bad_records_through() -> None:
    guard = DeadLetterGuard(ratio=0.5, window=1_000, min_records=200)
    for _ in range(50):
        guard.check(valid=480, rejected=20)  # 4% bad, forever: fine


def test_guard_halts_a_flood_before_it_is_recorded() -> None:
    guard = DeadLetterGuard(ratio=0.5, window=1_000, min_records=200)
    guard.check(valid=400, rejected=100)
    with pytest.raises(DeadLetterFlood, match="bad producer deploy"):
        guard.check(valid=0, rejected=500)  # 600 of 1,000 would be bad
    guard.check(valid=500, rejected=0)  # the refused batch was not counted


def test_guard_waits_for_enough_records() -> None:
    guard = DeadLetterGuard(ratio=0.5, window=1_000, min_records=200)
    guard.check(valid=0, rejected=150)  # 100% bad but only 150 records: not judged yet
    with pytest.raises(DeadLetterFlood):
        guard.check(valid=0, rejected=100)


def test_guard_window_slides() -> None:
    guard = DeadLetterGuard(ratio=0.5, window=100, min_records=50)
    guard.check(valid=0, rejected=40)
    guard.check(valid=100, rejected=0)  # pushes every rejection out of the window
    guard.check(valid=0, rejected=45)  # 45 of 100
    with pytest.raises(DeadLetterFlood):
        guard.check(valid=0, rejected=10)  # 55 of 100
