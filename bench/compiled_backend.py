"""LightGBM's ``Booster.predict`` against the compiled model (treelite + tl2cgen), per batch size.

Standalone: ``flock /tmp/bench.lock python -m bench.compiled_backend [--model models/model.txt]``
(trains the demo model there when absent). Both backends score the same demo-traffic vectors
(``streamscore_cli.demo_data``, 2% missing values) through :meth:`scoring.LoadedModel.predict`,
the call the executor makes, on one thread, in batches of 1, 64 and 500 rows; each figure is
the median (and min-max) of ``--repeats`` passes over all ``--rows`` rows, in milliseconds of
wall time per 1,000 rows. Compile time is measured into a fresh cache directory each time
(treelite load, C generation, gcc, loading and verifying the library). Every score of every
pass is checked to be identical (``np.array_equal``) between the two backends. Last, the
whole executor call (vectors, model, predictions; :func:`bench.reasons.measure`: events
through :class:`scoring.ScoringPipeline` with in-memory stored features, batches of 500).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import reasons
from bench.sysinfo import loadavg, machine
from scoring import LoadedModel, load_model
from scoring.compiled import BackendChoice
from streamscore_cli import demo_data
from streamscore_cli.train import train

BATCH_SIZES = (1, 64, 500)
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Spread:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class Row:
    batch: int
    lightgbm_ms: Spread
    compiled_ms: Spread

    @property
    def speedup(self) -> float:
        return self.lightgbm_ms.median / self.compiled_ms.median


def vectors(rows: int) -> Matrix:
    entities = demo_data.make_entities(seed=11)
    matrix, _ = demo_data.make_training_set(rows, entities, seed=11)
    return np.ascontiguousarray(matrix, dtype=np.float64)


def one_pass(model: LoadedModel, matrix: Matrix, batch: int) -> tuple[float, Matrix]:
    """(ms per 1,000 rows, the scores) scoring all of ``matrix`` in batches of ``batch``."""
    chunks = [matrix[at : at + batch] for at in range(0, matrix.shape[0], batch)]
    scores = []
    started = time.perf_counter()
    for chunk in chunks:
        scores.append(model.predict(chunk))
    elapsed = time.perf_counter() - started
    return elapsed * 1e6 / matrix.shape[0], np.concatenate(scores)


def compile_times(path: Path, repeats: int) -> Spread:
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="streamscore-bench-") as cache:
            started = time.perf_counter()
            model = load_model(path, backend=BackendChoice("compiled", Path(cache)))
            seconds.append(time.perf_counter() - started)
            if model.backend != "compiled":
                raise SystemExit(f"compilation failed: {model.backend_error}")
    return Spread.of(seconds)


def measure(
    lightgbm: LoadedModel, compiled: LoadedModel, matrix: Matrix, repeats: int
) -> list[Row]:
    rows = []
    for batch in BATCH_SIZES:
        one_pass(lightgbm, matrix[:1_000], batch)  # warm-up
        one_pass(compiled, matrix[:1_000], batch)
        timings: dict[str, list[float]] = {"lightgbm": [], "compiled": []}
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            for name, model in (("lightgbm", lightgbm), ("compiled", compiled)):
                ms, scores = one_pass(model, matrix, batch)
                timings[name].append(ms)
                if name == "lightgbm":
                    reference = scores
                elif not np.array_equal(scores, reference):
                    raise SystemExit(f"scores differ at batch size {batch}")
        rows.append(Row(batch, Spread.of(timings["lightgbm"]), Spread.of(timings["compiled"])))
    return rows


async def pipeline_ms(
    lightgbm: LoadedModel, compiled: LoadedModel, count: int, repeats: int
) -> tuple[Spread, Spread]:
    """ms per 1,000 events through the pipeline's executor call, each backend."""
    events, documents = reasons.make_events(count, seed=5)
    passes: dict[str, list[float]] = {"lightgbm": [], "compiled": []}
    for model in (lightgbm, compiled):
        await reasons.measure(model, events[: reasons.BATCH], documents, None, 1)  # warm-up
    for _ in range(repeats):
        for name, model in (("lightgbm", lightgbm), ("compiled", compiled)):
            ms, _ = await reasons.measure(model, events, documents, None, 1)
            passes[name].append(ms)
    return Spread.of(passes["lightgbm"]), Spread.of(passes["compiled"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.txt"))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile-repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.model.is_file():
        train(args.model)
    host, started = machine(), datetime.now(UTC)
    compile_s = compile_times(args.model, args.compile_repeats)
    with tempfile.TemporaryDirectory(prefix="streamscore-bench-") as cache:
        compiled = load_model(args.model, threads=1, backend=BackendChoice("compiled", Path(cache)))
        lightgbm = load_model(args.model, threads=1)
        matrix = vectors(args.rows)
        rows = measure(lightgbm, compiled, matrix, args.repeats)
        in_pipeline = asyncio.run(pipeline_ms(lightgbm, compiled, args.rows, args.repeats))
    print(
        f"{started:%Y-%m-%d %H:%M} UTC; {host.nproc} cores ({host.cpu_model}), Python "
        f"{host.python}; load average {host.loadavg_at_start[0]:.2f} at start, "
        f"{loadavg()[0]:.2f} at end"
    )
    print(
        f"model {lightgbm.name}:{lightgbm.version}, {lightgbm.booster.num_trees()} trees, "
        f"{len(lightgbm.feature_names)} features; {args.rows:,} demo vectors; one thread; "
        f"median (min-max) of {args.repeats} passes; every score identical"
    )
    print(f"compile (fresh cache, median of {args.compile_repeats}): {compile_s} s")
    print(f"{'batch':>5}  {'LightGBM ms / 1k rows':>24}  {'compiled ms / 1k rows':>24}  ratio")
    for row in rows:
        print(
            f"{row.batch:>5}  {row.lightgbm_ms!s:>24}  {row.compiled_ms!s:>24}  {row.speedup:.2f}x"
        )
    base, fast = in_pipeline
    print(
        f"pipeline executor call, batches of {reasons.BATCH} (vectors + model + predictions), "
        f"ms / 1k events: LightGBM {base}, compiled {fast}, {base.median / fast.median:.2f}x"
    )


if __name__ == "__main__":
    main()
