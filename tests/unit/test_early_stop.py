"""A SIGTERM that comes while ``streamscore`` is still importing and loading: the scorer and
the sidecar stop with exit code 0 (nothing was read yet), every other command ends on it as
before (killed by the signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMPORTING_S = 0.3
"""Well inside the import of the product (about 1.5 s on these machines)."""


def _terminated_early(args: list[str], tmp_path: Path) -> tuple[int, str]:
    env = dict(os.environ)
    env.update(
        STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",  # nothing listens there
        STREAMSCORE_MONGO__URL="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500",
        STREAMSCORE_STREAM__METRICS_PORT="",
        STREAMSCORE_API__PORT="0",
    )
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamscore_cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        time.sleep(IMPORTING_S)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("args", [["run"], ["run", "--workers", "2"], ["api"]])
def test_the_scorer_and_the_sidecar_stop_with_0_on_a_sigterm_during_start_up(
    args: list[str], tmp_path: Path
) -> None:
    code, output = _terminated_early(args, tmp_path)
    assert code == 0, output
    assert "Traceback" not in output
    if args == ["run"]:
        assert "SIGTERM during start-up: stopping before reading anything" in output


def test_other_commands_still_end_on_a_sigterm(tmp_path: Path) -> None:
    code, output = _terminated_early(["seed", "--entities", "10"], tmp_path)
    assert code == -signal.SIGTERM, output
