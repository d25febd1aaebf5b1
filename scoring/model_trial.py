"""A model text tried in a child process before this process loads it.

LightGBM checks little of a model text whose trees are whole: a consistent edit (a
``num_leaves`` that does not match its arrays, a child index out of range) aborts the whole
process (``terminate called``) or makes it loop forever, in ``Booster(model_str=...)`` or in
``predict``. A reload or a promotion must refuse such a file and keep serving the old model, so
the text is first loaded and scored by a child Python process; only when the child ends well
does this process load the very same text. A result is kept per text digest: the same text is
tried once per process.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

from scoring.errors import ModelLoadError

TRIAL_TIMEOUT_S = 120.0
"""Longest a child may take to load and score a model (a large model loads in seconds)."""

_CHILD = """
import sys
import numpy as np
import lightgbm as lgb
from scoring.compiled import probe_rows
text = sys.stdin.buffer.read().decode("utf-8")
try:
    booster = lgb.Booster(model_str=text)
    booster.predict(np.full((1, booster.num_feature()), np.nan), num_threads=1)
    booster.predict(probe_rows(booster), num_threads=1)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
"""

_tried: set[str] = set()
_lock = threading.Lock()


def trial_load(text: str, source: str, timeout_s: float = TRIAL_TIMEOUT_S) -> None:
    """Load and score ``text`` in a child process; raise :class:`ModelLoadError` naming
    ``source`` when the child fails, is killed (LightGBM aborted) or runs out of time."""
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    with _lock:
        if digest in _tried:
            return
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD], input=data, capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"LightGBM did not load and score {source} within {timeout_s:.0f} s (a damaged "
            "model that loops?)"
        ) from None
    if child.returncode != 0:
        said = child.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = said[-1] if said else "no message"
        how = (
            f"failed ({reason})"
            if child.returncode == 1
            else f"crashed (exit code {child.returncode}: {reason})"
        )
        raise ModelLoadError(f"LightGBM could not load {source}: a trial load {how}")
    with _lock:
        _tried.add(digest)
