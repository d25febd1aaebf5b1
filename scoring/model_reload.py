"""Hot model reload: notice a new model file, validate it off the event loop, swap it in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.compiled import BackendChoice
from scoring.errors import ModelLoadError
from scoring.model import LoadedModel, check_feature_names, load_model, metadata_path
from scoring.pipeline import ScoringPipeline
from scoring.vectors import assemble
from telemetry.background import BackgroundTask

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int], ...]
_LOAD_ATTEMPTS = 5


def file_signature(path: Path) -> Signature | None:
    """(mtime_ns, size) of the model file and its metadata; None if either is missing."""
    try:
        return tuple(
            (stat.st_mtime_ns, stat.st_size) for stat in (path.stat(), metadata_path(path).stat())
        )
    except FileNotFoundError:
        return None


def validate(candidate: LoadedModel, pipeline: ScoringPipeline) -> None:
    """Raise :class:`ModelLoadError` unless ``candidate`` can replace the current model.

    1. Its feature names can be filled (:func:`check_feature_names`).
    2. It scores a golden sample (the pipeline's recent events, plus an all-missing row) to
       finite numbers.
    """
    check_feature_names(candidate)
    names = candidate.feature_names
    events, stored = pipeline.golden_sample()
    matrix, _ = assemble(events, stored, names)
    matrix = np.vstack([matrix, np.full((1, len(names)), np.nan)])
    scores = candidate.predict(matrix)
    if scores.shape != (matrix.shape[0],) or not all(math.isfinite(float(s)) for s in scores):
        raise ModelLoadError("the model does not score the golden sample to finite numbers")


@dataclass
class ReloadStats:
    loaded: int = 0
    refused: int = 0
    last_error: str | None = None


class ModelReloader:
    """Watches ``path``; when both files changed and settled, loads, validates and swaps.

    By default it swaps the pipeline's main model; the challenger's reloader passes
    ``swap=pipeline.swap_challenger``, ``counted=metrics.challenger_reloaded`` and
    ``role="challenger"`` (the same guarantees, its own counter and log words).

    This guarantees:
    1. Loading and validation run in a worker thread (so does compiling, with ``backend``
       asking for ``compiled``); the event loop never waits on them.
    2. The swap happens between pipeline calls: a batch is scored by one model only, and every
       prediction names the version that scored it.
    3. A model that fails to load or validate is refused (logged, counted) and the current one
       keeps serving; the same files are not retried until they change again.
    4. Every reload is counted in the pipeline's metrics by result as it happens.
    """

    def __init__(
        self,
        path: Path,
        pipeline: ScoringPipeline,
        *,
        threads: int = 1,
        interval_s: float = 5.0,
        on_change: Callable[[LoadedModel], None] | None = None,
        swap: Callable[[LoadedModel], None] | None = None,
        counted: Callable[[bool], None] | None = None,
        role: str = "model",
        backend: BackendChoice | None = None,
    ) -> None:
        self._path = path
        self._pipeline = pipeline
        self._swap = swap if swap is not None else pipeline.swap_model
        self._counted = counted if counted is not None else pipeline.metrics.model_reloaded
        self._role = role
        self._threads = threads
        self._backend = backend
        self._interval = interval_s
        self._on_change = on_change
        self._seen = file_signature(path)
        self._pending: Signature | None = None
        self._missing = False
        self._lock = asyncio.Lock()
        self._task = BackgroundTask(self._run)
        self.stats = ReloadStats()

    def look_again(self) -> None:
        """The next look loads the files even if they did not change since the last load or
        refusal (a refusal that the files cannot explain, e.g. right after a promotion)."""
        self._seen = None

    async def reload(self) -> LoadedModel:
        """Load and swap now (the admin call and SIGHUP). Raises :class:`ModelLoadError`."""
        async with self._lock:
            signature = file_signature(self._path)
            loop = asyncio.get_running_loop()
            try:
                for _ in range(_LOAD_ATTEMPTS):
                    candidate = await loop.run_in_executor(
                        None,
                        lambda: load_model(
                            self._path, threads=self._threads, backend=self._backend
                        ),
                    )
                    # Files replaced while loading (a promotion renames the model file, then
                    # its metadata) could pair one model with another's name: load again.
                    now = file_signature(self._path)
                    if now == signature:
                        break
                    signature = now
                else:
                    raise ModelLoadError(
                        f"the files kept changing while they were loaded ({_LOAD_ATTEMPTS} tries)"
                    )
                await loop.run_in_executor(None, validate, candidate, self._pipeline)
            except Exception as exc:
                # Anything a model's files can cause is a refusal (counted, logged once), never
                # an error that the poll retries with a traceback every interval.
                refusal = exc if isinstance(exc, ModelLoadError) else ModelLoadError(repr(exc))
                self._seen = signature
                self.stats.refused += 1
                self._counted(False)
                self.stats.last_error = str(refusal)
                log.error(
                    "refused new %s at %s: %s",
                    self._role,
                    self._path,
                    refusal,
                    extra={"event": f"{self._role}_refused", "path": str(self._path)},
                )
                if refusal is exc:
                    raise
                raise refusal from exc
            current = self._pipeline.model if self._role == "model" else self._pipeline.challenger
            self._swap(candidate)
            self._seen = signature
            self.stats.loaded += 1
            self._counted(True)
            self.stats.last_error = None
            before = f"{current.name}:{current.version}" if current is not None else "none"
            log.info(
                "%s swapped: %s -> %s:%s",
                self._role,
                before,
                candidate.name,
                candidate.version,
                extra={
                    "event": f"{self._role}_swap",
                    "from_version": current.version if current is not None else None,
                    "to_version": candidate.version,
                },
            )
            if self._on_change is not None:
                self._on_change(candidate)
            return candidate

    async def check(self) -> None:
        """One poll: reload once the files changed and stayed the same for one interval."""
        signature = file_signature(self._path)
        if signature is None:
            self._pending = None
            self._say_missing()
            return
        self._missing = False
        if signature == self._seen:
            self._pending = None
            return
        if signature != self._pending:
            self._pending = signature  # still being written? look again next time
            return
        self._pending = None
        with contextlib.suppress(ModelLoadError):
            await self.reload()

    def _say_missing(self) -> None:
        """Log once (until the files are back) that the watched files are gone: the loaded
        model keeps serving, but a restart now would fail (the main model) or start without
        it (the challenger)."""
        if self._missing:
            return
        self._missing = True
        gone = [str(p) for p in (self._path, metadata_path(self._path)) if not p.exists()]
        restart = "would fail" if self._role == "model" else "would start without it"
        log.warning(
            "%s file missing: %s; the loaded %s keeps serving, a restart %s",
            self._role,
            ", ".join(gone) or str(self._path),
            self._role,
            restart,
            extra={"event": f"{self._role}_files_missing", "path": str(self._path)},
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:
                log.exception("model reload check failed")

    def start(self) -> None:
        if self._interval > 0:
            self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
