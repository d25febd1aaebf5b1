"""The supervisor's restart policy, with tiny real child processes standing in for workers."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from settings import load_settings
from streams.exit_codes import ExitCode
from streams.supervisor import Supervisor, Worker, restart_backoff


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """``Supervisor.run`` installs SIGTERM/SIGINT handlers: put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _exits_after(starts_file: Path, codes: list[int]) -> list[str]:
    """A worker that exits with ``codes[n]`` on its n-th start (the last code from then on);
    a negative code is death by that signal."""
    return _python(
        "import os, pathlib, sys\n"
        f"f = pathlib.Path({str(starts_file)!r})\n"
        "n = len(f.read_text()) if f.exists() else 0\n"
        "f.write_text('x' * (n + 1))\n"
        f"codes = {[int(c) for c in codes]!r}\n"
        "code = codes[min(n, len(codes) - 1)]\n"
        "if code < 0:\n"
        "    os.kill(os.getpid(), -code)\n"
        "sys.exit(code)\n"
    )


def test_backoff_doubles_from_half_a_second_up_to_thirty() -> None:
    assert [restart_backoff(n, ran_for_s=1.0) for n in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]


def test_a_worker_that_ran_for_a_minute_restarts_promptly() -> None:
    assert restart_backoff(6, ran_for_s=61.0) == 0.5


@pytest.mark.parametrize(
    "code",
    [
        ExitCode.CONFIGURATION,
        ExitCode.DEAD_LETTER_FLOOD,
        ExitCode.UNREADABLE_RECORD,
        ExitCode.REPEATED_FAILURE,
    ],
)
def test_a_fatal_exit_stops_the_group_with_that_code(code: ExitCode, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    sleeper = _python("import time; time.sleep(60)")
    fatal = _exits_after(starts, [code])

    class OneFatal(Supervisor):
        """Worker 0 dies fatally; worker 1 would run for a minute."""

        def _spawn(self, index: int, restarts: int = 0) -> Worker:
            self._command = fatal if index == 0 else sleeper
            return super()._spawn(index, restarts)

    assert OneFatal(load_settings(), workers=2).run() == code
    assert starts.read_text() == "x"  # never restarted


def test_other_exits_are_restarted_with_growing_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = tmp_path / "starts"
    codes = [ExitCode.BATCH_FAILED, -signal.SIGKILL, ExitCode.OK, ExitCode.DEAD_LETTER_FLOOD]
    supervisor = Supervisor(load_settings(), workers=1, command=_exits_after(starts, codes))

    with caplog.at_level(logging.WARNING, logger="streams.supervisor"):
        assert supervisor.run() == ExitCode.DEAD_LETTER_FLOOD

    assert starts.read_text() == "xxxx"  # three restarts, then the fatal code
    restarts = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert [m.split("exited with code ")[1] for m in restarts] == [
        "1: restarting in 0.5s",
        "-9: restarting in 1.0s",
        "0: restarting in 2.0s",
    ]


def test_each_worker_gets_the_settings_with_its_own_client_id_and_port(tmp_path: Path) -> None:
    report = _python(
        "import os, pathlib, sys\n"
        "e = os.environ\n"
        f"out = pathlib.Path({str(tmp_path)!r}) / e['STREAMSCORE_KAFKA__CLIENT_ID']\n"
        "keys = ['STREAMSCORE_STREAM__WORKERS', 'STREAMSCORE_STREAM__METRICS_PORT',\n"
        "        'STREAMSCORE_KAFKA__GROUP_ID', 'STREAMSCORE_SCORING__CACHE_TTL_S']\n"
        "out.write_text(' '.join(e[k] for k in keys))\n"
        "sys.exit(2)\n"
    )
    settings = load_settings(
        kafka={"client_id": "sc", "group_id": "g-9"},
        stream={"metrics_port": 9500, "workers": 2},
        scoring={"cache_ttl_s": 7.5},
    )

    assert Supervisor(settings, workers=2, command=report).run() == ExitCode.CONFIGURATION

    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert written["sc-0"] == "1 9500 g-9 7.5"
    if "sc-1" in written:  # the group may stop before the second worker got to write
        assert written["sc-1"] == "1 9501 g-9 7.5"


def test_sigterm_stops_every_worker_and_exits_ok() -> None:
    supervisor = Supervisor(
        load_settings(), workers=2, command=_python("import time; time.sleep(60)")
    )
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert supervisor.run() == ExitCode.OK
    finally:
        timer.cancel()
    assert [w.process.returncode for w in supervisor._workers.values()] == [
        -signal.SIGTERM,
        -signal.SIGTERM,
    ]


def test_sigterm_while_a_worker_waits_for_its_restart_stops_at_once(tmp_path: Path) -> None:
    """A worker keeps failing (Kafka down): a SIGTERM during its restart backoff stops the
    group now, without starting it again; meanwhile the other worker is still watched."""
    import time

    starts = tmp_path / "starts"
    failing = _exits_after(starts, [ExitCode.BATCH_FAILED])
    supervisor = Supervisor(load_settings(), workers=1, command=failing)
    # Restarts at 0.5, 1.0, 2.0, 4.0 s...: the signal comes during the 4 s wait (after 3.5 s).
    timer = threading.Timer(4.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    began = time.monotonic()
    try:
        assert supervisor.run() == ExitCode.OK
    finally:
        timer.cancel()
    assert time.monotonic() - began < 6.5  # not after the 4 s backoff and another start
    assert len(starts.read_text()) <= 4  # at most 3 restarts (0.5, 1, 2 s); none after it
