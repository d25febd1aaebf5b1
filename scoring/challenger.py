"""The challenger (shadow) model: attached at start, reloaded like the main model, promoted by
swapping the two models' files."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas import ModelRef
from scoring.compiled import BackendChoice
from scoring.errors import ModelLoadError
from scoring.model import LoadedModel, check_feature_names, load_model, metadata_path
from scoring.model_reload import ModelReloader, validate
from scoring.pipeline import ScoringPipeline
from settings import Settings

log = logging.getLogger(__name__)


async def challenger_reloader(
    settings: Settings, pipeline: ScoringPipeline
) -> ModelReloader | None:
    """Attach the configured challenger to ``pipeline`` and return its reloader (None when no
    challenger is configured).

    1. A challenger that fails to load or validate is not attached: logged
       (``"event": "challenger_dropped"``) and counted
       (``streamscore_challenger_failures_total{stage="load"}``); the main model scores alone.
    2. The reloader watches the challenger's files like the main model's (same interval,
       same validation) and attaches each new version that passes; its results are counted in
       ``streamscore_challenger_reloads_total``.
    3. It is loaded (and compiled, with ``STREAMSCORE_MODEL__BACKEND=compiled``) and
       validated in a worker thread, never on the event loop.
    """
    path = settings.challenger.path
    if path is None:
        return None
    threads, backend = settings.model.threads, BackendChoice.of(settings.model)
    try:
        candidate = await asyncio.to_thread(load_model, path, threads=threads, backend=backend)
        await asyncio.to_thread(validate, candidate, pipeline)
    except Exception as exc:
        pipeline.metrics.challenger_failures.labels("load").inc()
        log.error(
            "challenger at %s not attached, the main model scores alone: %s",
            path,
            exc,
            extra={"event": "challenger_dropped", "stage": "load", "path": str(path)},
        )
    else:
        pipeline.swap_challenger(candidate)
        log.info(
            "challenger attached: %s:%s",
            candidate.name,
            candidate.version,
            extra={"event": "challenger_attached", "to_version": candidate.version},
        )
    return ModelReloader(
        path,
        pipeline,
        threads=threads,
        interval_s=settings.model.reload_interval_s,
        swap=pipeline.swap_challenger,
        counted=pipeline.metrics.challenger_reloaded,
        role="challenger",
        backend=backend,
    )


@dataclass(frozen=True)
class Promotion:
    """What a promotion did: the new main model and the one now shadowing it."""

    main: ModelRef
    challenger: ModelRef


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.promoting-{os.getpid()}")


def promote_files(
    main_path: Path,
    challenger_path: Path,
    *,
    threads: int = 1,
    check: Callable[[LoadedModel], None] = check_feature_names,
    check_demoted: Callable[[LoadedModel], None] | None = None,
) -> Promotion:
    """Make the challenger the main model by swapping the two models' files.

    This guarantees:
    1. Nothing is touched unless both models load and ``check`` accepts the challenger as a
       main model (by default: its feature names can be filled, the reloader's rule; the
       sidecar also scores its golden sample); otherwise :class:`ModelLoadError`.
    2. Each new file is written aside in its destination's folder and renamed into place
       (an atomic replace), model file then metadata: no reader ever sees a partly written
       file, and every running scorer's reloader picks the pair up once both settled.
    3. The old main model becomes the challenger (so promoting again rolls back); with
       ``check_demoted``, only when that accepts it as a challenger (the file on disk may be
       one a reloader refused), else nothing is touched.
    4. One promotion at a time on these files, across processes (a lock file beside the main
       model): two at once could otherwise pair one model's file with the other's metadata.
    """
    if main_path.resolve() == challenger_path.resolve():
        raise ModelLoadError(
            f"the challenger is the main model's own file ({main_path}): nothing to promote"
        )
    with _promotion_lock(main_path):
        return _swap(main_path, challenger_path, threads, check, check_demoted)


@contextlib.contextmanager
def _promotion_lock(main_path: Path) -> Iterator[None]:
    """An exclusive lock on ``.<model file name>.promote.lock`` beside the main model."""
    lock_path = main_path.with_name(f".{main_path.name}.promote.lock")
    try:
        # Read-only is enough for flock: a lock file another user created (root, say) locks
        # for everyone who may swap the files, which needs only the folder to be writable.
        descriptor = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ModelLoadError(f"cannot promote: {lock_path}: {exc}") from exc
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _swap(
    main_path: Path,
    challenger_path: Path,
    threads: int,
    check: Callable[[LoadedModel], None],
    check_demoted: Callable[[LoadedModel], None] | None,
) -> Promotion:
    challenger = load_model(challenger_path, threads=threads)
    check(challenger)
    main = load_model(main_path, threads=threads)
    if check_demoted is not None:
        try:
            check_demoted(main)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"the main model's file {main_path} would become the challenger, and is "
                f"refused as one: {exc}"
            ) from exc
    pairs = [
        (challenger_path, main_path),
        (metadata_path(challenger_path), metadata_path(main_path)),
        (main_path, challenger_path),
        (metadata_path(main_path), metadata_path(challenger_path)),
    ]
    asides: list[tuple[Path, Path]] = []
    try:
        for source, destination in pairs:  # copy all four aside before renaming any
            aside = _aside(destination)
            shutil.copyfile(source, aside)
            with aside.open("rb") as written:
                os.fsync(written.fileno())
            asides.append((aside, destination))
    except OSError as exc:
        for aside, _ in asides:
            aside.unlink(missing_ok=True)
        raise ModelLoadError(f"promotion failed before any file was replaced: {exc}") from exc
    for aside, destination in asides:
        os.replace(aside, destination)
    log.info(
        "promoted challenger %s:%s to main; %s:%s is the challenger now",
        challenger.name,
        challenger.version,
        main.name,
        main.version,
        extra={"event": "challenger_promoted", "to_version": challenger.version},
    )
    return Promotion(
        main=ModelRef(name=challenger.name, version=challenger.version),
        challenger=ModelRef(name=main.name, version=main.version),
    )
