"""Structured logs and the dead-letter flood guard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from streams.dead_letter_guard import DeadLetterFlood, DeadLetterGuard
from streamscore_cli.logs import JsonLines
from tests.support.names import Names, settings_for


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


def test_fast_streams_topic_creation_warning_is_debug_when_the_scorer_creates_them(
    names: Names, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from streams.app import build_app
    from streams.app import log as app_log

    for create, expected in ((True, []), (False, ["WARNING"])):
        build_app(settings_for(names, model_path, kafka={"create_topics": create}))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=app_log.name):
            app_log.warning("Auto create topics is disabled. Make sure the topics exist.")
            app_log.warning("something else")
        levels = [r.levelname for r in caplog.records if "Auto create" in r.getMessage()]
        assert levels == expected
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][-1] == (
            "something else"
        )
