"""The model compiled to native code (treelite + tl2cgen): ``Booster.predict``'s scores, faster.

The LightGBM model file is turned into C by tl2cgen and compiled by the machine's C compiler
into a shared library, cached by the model file's SHA-256, so each model is compiled once per
cache directory. Measured on the demo model (300 trees, 2 shared cores, 2026-11-29, splits
quantized): about 4 s to compile, then 3.9x faster than ``Booster.predict`` on batches of 500
rows, 2.3x on single rows (``bench/compiled_backend.py``).

The compiled library is only used when it reproduces ``Booster.predict`` bit for bit on rows
that sit at, just below and just above every split threshold of the model, with missing
values and zeros (:func:`probe_rows`); otherwise :class:`CompileError`.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from scoring.compiled_library import ZERO_THRESHOLD, CompiledModel, CompileError, packages
from settings import ModelSettings

Backend = Literal["lightgbm", "compiled"]
"""What executes a model's predictions."""
BackendSetting = Literal["auto", "lightgbm", "compiled"]
"""What is asked for: ``auto`` is ``compiled`` where tl2cgen and a C compiler are found,
``lightgbm`` elsewhere (see :func:`compiler_missing`)."""
DEFAULT_CACHE_DIR = Path(".local/compiled-models")
COMPILER_FLAGS = ("-O1",)
"""tl2cgen builds with ``-O3``; ``-O1`` compiled the demo model 1.5-2.5x faster into a library
that predicted no slower (IEEE arithmetic either way: no fast-math, no FMA contraction)."""
GENERATOR_PARAMS: dict[str, int] = {"quantize": 1}
"""tl2cgen's code generation: with ``quantize`` each input value is first turned into its
place among the feature's sorted split thresholds (a binary search, exact for every double),
then every split compares integers. Measured on the demo model (500-row batches, 2026-11-29):
5.3 against 9.4 µs per row on random rows and 3.4 against 6.4 on the probe rows, with the
same scores bit for bit on 200,000 random rows mixing thresholds, the doubles beside them,
infinities, subnormals and -0.0 (rows holding +-DBL_MAX are scored by LightGBM either way,
see :meth:`scoring.model.LoadedModel.predict`)."""
PROBE_RANDOM_ROWS = 1024


def recipe() -> str:
    """Part of every cached library's name: a new compiler recipe never reuses an old one."""
    treelite, tl2cgen = packages()
    flags = "".join(COMPILER_FLAGS)
    generator = "".join(f"-{name}{value}" for name, value in sorted(GENERATOR_PARAMS.items()))
    return f"tl2cgen{tl2cgen.__version__}-treelite{treelite.__version__}{flags}{generator}"


@dataclass(frozen=True)
class BackendChoice:
    """How a model is executed (``STREAMSCORE_MODEL__BACKEND``, ``__COMPILED_CACHE_DIR``)."""

    backend: BackendSetting = "auto"
    cache_dir: Path = DEFAULT_CACHE_DIR

    @classmethod
    def of(cls, model: ModelSettings) -> BackendChoice:
        return cls(model.backend, model.compiled_cache_dir)


def compiler_command() -> str:
    """The C compiler tl2cgen runs: ``$CC``, else ``gcc``."""
    return os.environ.get("CC", "").strip() or "gcc"


def compiler_missing() -> str | None:
    """What this machine lacks to compile a model (None when nothing is missing): the
    ``tl2cgen``/``treelite`` packages, or the C compiler :func:`compiler_command` names."""
    try:
        packages()
    except (ImportError, OSError) as exc:
        return f"the tl2cgen and treelite packages ({exc})"
    command = compiler_command()
    try:
        program = shlex.split(command)[0]
    except (ValueError, IndexError):
        return f"a C compiler (CC={command!r} cannot be read as a command)"
    if shutil.which(program) is None:
        return f"a C compiler ({program!r} not found; set CC)"
    return None


def file_digest(path: Path) -> str:
    """The SHA-256 of a model file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_path(cache_dir: Path, digest: str) -> Path:
    """Where the library of the model with SHA-256 ``digest`` is cached."""
    return cache_dir / f"{digest}.{recipe()}.so"


def _split_values(booster: lgb.Booster) -> list[set[float]]:
    """Per feature: every numeric threshold of the model's splits and the category values of
    its categorical splits."""
    found: list[set[float]] = [set() for _ in range(booster.num_feature())]
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            feature, threshold = int(node["split_feature"]), node["threshold"]
            if isinstance(threshold, str):  # categorical: "1||4||7"
                found[feature].update(float(c) for c in threshold.split("||") if c)
            else:
                found[feature].add(float(threshold))
            stack.extend((node["left_child"], node["right_child"]))
    return found


def probe_rows(booster: lgb.Booster, *, seed: int = 0) -> npt.NDArray[np.float64]:
    """Rows on which two executions of ``booster`` must agree exactly.

    Each feature takes each of its split thresholds, the doubles just below and just above
    them, missing (NaN), 0 and LightGBM's zero bounds (+-1e-35); the first rows walk through
    every such value of every feature, then random rows mix them.
    """
    columns = []
    for thresholds in _split_values(booster):
        values = {math.nan, 0.0, 1e-35, -1e-35, ZERO_THRESHOLD, -ZERO_THRESHOLD, -1.0, 1.0}
        for t in thresholds:
            values.update((t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)))
        columns.append(np.array(sorted(values, key=lambda v: (math.isnan(v), v))))
    walked = max(len(c) for c in columns)
    rng = np.random.default_rng(seed)
    matrix = np.empty((walked + PROBE_RANDOM_ROWS, len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        matrix[:walked, j] = column[np.arange(walked) % len(column)]
        matrix[walked:, j] = rng.choice(column, size=PROBE_RANDOM_ROWS)
    return matrix


def verify(booster: lgb.Booster, compiled: CompiledModel) -> None:
    """Raise :class:`CompileError` unless ``compiled`` scores every probe row exactly as
    ``booster.predict`` does (``np.array_equal``, not a tolerance)."""
    if compiled.num_features != booster.num_feature():
        raise CompileError(
            f"the library has {compiled.num_features} features, the model {booster.num_feature()}"
        )
    rows = probe_rows(booster)
    expected = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    expected = expected.reshape(rows.shape[0], -1)[:, -1]
    actual = compiled.predict(rows)
    if not np.array_equal(expected, actual):
        differ = int(np.count_nonzero(expected != actual))
        raise CompileError(
            f"compiled scores differ from Booster.predict on {differ} of {rows.shape[0]} probe rows"
        )


def _compile(model_bytes: bytes, library: Path) -> None:
    """Compile the LightGBM model text ``model_bytes`` into ``library`` (written aside, then
    renamed into place: a reader never sees a partial library)."""
    treelite, tl2cgen = packages()
    library.parent.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(os.cpu_count() or 1, 8))
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".compiling-") as work:
        model_file = Path(work) / "model.txt"
        model_file.write_bytes(model_bytes)
        model = treelite.frontend.load_lightgbm_model(model_file)
        built = Path(work) / "model.so"
        tl2cgen.export_lib(
            model,
            toolchain=compiler_command(),
            libpath=built,
            params=GENERATOR_PARAMS | ({"parallel_comp": jobs} if jobs > 1 else {}),
            nthread=jobs,
            options=list(COMPILER_FLAGS),
        )
        os.replace(built, library)


def _compile_once(model_bytes: bytes, library: Path) -> bool:
    """Compile unless another process (a ``--workers`` sibling) is compiling or has compiled
    the same library: they take turns on a lock file beside it. True if it was there."""
    library.parent.mkdir(parents=True, exist_ok=True)
    with library.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.is_file():
            return True
        _compile(model_bytes, library)
        return False


@dataclass(frozen=True)
class Compiled:
    """A verified compiled model and how it was obtained."""

    model: CompiledModel
    reused: bool
    """True when the library came from the cache (no compiler ran)."""
    seconds: float
    """Compiling (when it ran), loading and verifying."""


def compile_model(
    path: Path, booster: lgb.Booster, *, cache_dir: Path, threads: int = 1
) -> Compiled:
    """The compiled, verified counterpart of ``booster`` (loaded from ``path``).

    This guarantees:
    1. The library is cached under the SHA-256 of the model file's bytes (and the compiler
       recipe): the same file is compiled once per cache directory; a changed file compiles
       anew. Those same bytes are what the compiler reads.
    2. The library is used only if it scores every :func:`probe_rows` row exactly as
       ``booster`` does; a cached library that cannot be loaded is compiled again once.
    3. Any failure (no compiler, a model treelite cannot read, a mismatch) raises
       :class:`CompileError` naming the cause. Runs in the calling thread: call it off the
       event loop.
    """
    started = time.perf_counter()
    try:
        model_bytes = path.read_bytes()
        digest = hashlib.sha256(model_bytes).hexdigest()
        library = library_path(cache_dir, digest)
        reused = library.is_file()
        if not reused:
            reused = _compile_once(model_bytes, library)
        try:
            compiled = CompiledModel(library, digest=digest, threads=threads)
        except Exception:
            if not reused:
                raise
            library.unlink(missing_ok=True)  # a damaged cache entry: build it again
            reused = _compile_once(model_bytes, library)
            compiled = CompiledModel(library, digest=digest, threads=threads)
        verify(booster, compiled)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(f"{type(exc).__name__}: {exc}") from exc
    return Compiled(compiled, reused, time.perf_counter() - started)
