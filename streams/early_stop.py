"""A SIGTERM that comes before the scorer or the sidecar handles signals itself.

Importing the product and loading the model take a few seconds, and until the scorer's (or
uvicorn's) own handlers are installed Python's default would end the process with 143: an
orchestrator that stops a scorer that has just started would see a failure, although nothing
had been read yet. The ``streamscore`` command calls :func:`hold_sigterm` before anything
else; the scorer, the supervisor and the sidecar look at :func:`held` once their own handlers
are in place and stop at once, with exit code 0. Every other command calls :func:`release`.
"""

from __future__ import annotations

import signal
from types import FrameType

_held = False


def _hold(_signum: int, _frame: FrameType | None) -> None:
    global _held
    _held = True


def hold_sigterm() -> None:
    """Note a SIGTERM instead of ending the process (until :func:`release` or other handlers)."""
    signal.signal(signal.SIGTERM, _hold)


def held() -> bool:
    """Whether a SIGTERM came while it was held."""
    return _held


def release() -> None:
    """Give SIGTERM back to Python's default; one that came meanwhile ends the process now,
    as it would have then."""
    if signal.getsignal(signal.SIGTERM) is _hold:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _held:
        signal.raise_signal(signal.SIGTERM)
