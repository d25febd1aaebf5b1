"""The compiled backend: scores bit-identical to ``Booster.predict``, the cache by model hash,
the fallback to LightGBM, reloads through it."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pytest

from scoring import LoadedModel, ScoringPipeline, load_model
from scoring.compiled import (
    BackendChoice,
    compile_model,
    compiler_missing,
    file_digest,
    library_path,
    verify,
)
from scoring.compiled_library import CompiledModel, CompileError
from scoring.model import metadata_path
from scoring.model_reload import ModelReloader
from scoring.service import open_scoring
from settings import load_settings
from streamscore_cli.train import train
from tests.support.challenger import copy_model
from tests.support.helpers import MemoryFeatures

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Built:
    """A model file, its booster and its compiled library (compiled once per session)."""

    path: Path
    booster: lgb.Booster
    compiled: CompiledModel
    compile_s: float


def _train_with_missing(path: Path, *, zero_as_missing: bool) -> Path:
    """A binary model trained on data with NaNs and many exact zeros, so that its splits have
    missing-value directions (``missing_type`` NaN, or Zero with ``zero_as_missing``)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4_000, 6)) * 10
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.2] = 0.0
    signal = np.nan_to_num(x[:, 0]) + 2 * np.isnan(x[:, 1]) - (x[:, 2] == 0) * 3
    y = (signal + rng.normal(size=len(x)) > 0).astype(np.float64)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "zero_as_missing": zero_as_missing,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
    }
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=60)
    booster.save_model(str(path))
    metadata_path(path).write_text('{"name": "missing", "version": "1"}')
    return path


def _retrain(path: Path) -> Path:
    """Another model in the same file: the test model's features, other trees."""
    train(path, rows=20_000, trees=40, seed=99, version="2")
    return path


def _build(path: Path, cache: Path) -> Built:
    booster = lgb.Booster(model_file=str(path))
    started = time.perf_counter()
    compiled = compile_model(path, booster, cache_dir=cache).model
    return Built(path, booster, compiled, time.perf_counter() - started)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session (``test_compiled_library`` shares it: one compile each)."""
    return tmp_path_factory.getbasetemp() / "compiled-cache"


@pytest.fixture(scope="session")
def demo(model_path: Path, cache_dir: Path) -> Built:
    return _build(model_path, cache_dir)


@pytest.fixture(scope="session")
def with_missing(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Built:
    path = _train_with_missing(tmp_path_factory.mktemp("nan") / "model.txt", zero_as_missing=False)
    return _build(path, cache_dir)


def split_thresholds(booster: lgb.Booster) -> list[list[float]]:
    """Per feature, every numeric threshold of the model's splits (from ``dump_model``)."""
    found: list[set[float]] = [set() for _ in range(booster.num_feature())]
    for tree in booster.dump_model()["tree_info"]:
        nodes = [tree["tree_structure"]]
        while nodes:
            node = nodes.pop()
            if "split_feature" in node:
                found[node["split_feature"]].add(float(node["threshold"]))
                nodes += [node["left_child"], node["right_child"]]
    return [sorted(f) for f in found]


def rows_at_thresholds(booster: lgb.Booster, seed: int = 1) -> Matrix:
    """Random base rows with one feature set exactly at a split threshold, or at the double
    just below or above it, or missing (NaN) or zero; then every feature missing."""
    rng = np.random.default_rng(seed)
    width = booster.num_feature()
    rows: list[Matrix] = []
    for feature, thresholds in enumerate(split_thresholds(booster)):
        values = [math.nan, 0.0]
        for t in thresholds:
            values += [t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)]
        block = rng.normal(size=(len(values), width)) * 50
        block[rng.random(block.shape) < 0.2] = np.nan
        block[:, feature] = values
        rows.append(block)
    rows.append(np.full((1, width), np.nan))
    return np.vstack(rows)


def random_rows(width: int, count: int = 3_000, seed: int = 2) -> Matrix:
    rng = np.random.default_rng(seed)
    rows: Matrix = rng.normal(size=(count, width)) * rng.choice(
        [1.0, 10.0, 1_000.0], size=(count, 1)
    )
    rows[rng.random(rows.shape) < 0.15] = np.nan
    rows[rng.random(rows.shape) < 0.05] = 0.0
    return rows


def expected(booster: lgb.Booster, rows: Matrix) -> Matrix:
    scores: Matrix = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    return scores


def test_every_score_equals_booster_predict_at_thresholds_missing_and_random(
    demo: Built,
) -> None:
    rows = np.vstack([rows_at_thresholds(demo.booster), random_rows(demo.booster.num_feature())])
    assert rows.shape[0] > 3_000
    assert np.array_equal(demo.compiled.predict(rows), expected(demo.booster, rows))


def test_special_doubles_beside_thresholds_score_identically(demo: Built) -> None:
    """Quantized splits turn each value into its place among the thresholds: infinities,
    subnormals, -0.0, the zero bounds and huge magnitudes must land where LightGBM's
    comparisons send them, in any mix with thresholds and their neighbours."""
    rng = np.random.default_rng(7)
    special = [math.inf, -math.inf, 5e-324, -5e-324, -0.0, 1e-35, -1e-35, 1e-36, 1e300, -1e300]
    columns = []
    for thresholds in split_thresholds(demo.booster):
        near = [
            v
            for t in thresholds
            for v in (t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf))
        ]
        columns.append(rng.choice(np.array(near + special + [math.nan]), size=20_000))
    rows = np.column_stack(columns)
    assert np.isinf(rows).any()
    assert np.array_equal(demo.compiled.predict(rows), expected(demo.booster, rows))


def test_a_model_trained_with_missing_values_scores_identically(with_missing: Built) -> None:
    booster = with_missing.booster
    rows = np.vstack([rows_at_thresholds(booster), random_rows(booster.num_feature())])
    # LightGBM reads any value of magnitude <= 1e-35 as 0.0; its splits sit at those bounds
    tiny = np.full((4, booster.num_feature()), 1.0)
    tiny[:, 0] = [1e-35, -1e-35, 1e-36, -1e-300]
    rows = np.vstack([rows, tiny])
    assert np.array_equal(with_missing.compiled.predict(rows), expected(booster, rows))


def test_a_zero_as_missing_model_is_not_compiled(tmp_path: Path) -> None:
    # treelite has no "zero is missing" split: the verification refuses the library
    path = _train_with_missing(tmp_path / "model.txt", zero_as_missing=True)
    booster = lgb.Booster(model_file=str(path))
    with pytest.raises(CompileError, match=r"differ from Booster\.predict on \d+ of"):
        compile_model(path, booster, cache_dir=tmp_path / "cache")
    loaded = load_model(path, backend=BackendChoice("compiled", tmp_path / "cache"))
    assert loaded.backend == "lightgbm"


def test_compiling_takes_seconds_not_minutes(demo: Built) -> None:
    # The demo model of the tests (40 trees); measured, not a benchmark.
    assert demo.compile_s < 60


def test_the_cached_library_is_reused_without_compiling(
    demo: Built, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_compiler(*args: Any) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr("scoring.compiled._compile", no_compiler)
    again = compile_model(demo.path, demo.booster, cache_dir=cache_dir)
    assert again.reused
    assert again.model.library == demo.compiled.library
    assert again.model.library == library_path(cache_dir, file_digest(demo.path))


def test_a_changed_model_compiles_again(demo: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = copy_model(demo.path, tmp_path / "model.txt")
    first = compile_model(path, lgb.Booster(model_file=str(path)), cache_dir=cache)
    assert not first.reused
    _retrain(path)
    booster = lgb.Booster(model_file=str(path))
    second = compile_model(path, booster, cache_dir=cache)
    assert not second.reused
    assert second.model.digest != first.model.digest
    assert sorted(p.name for p in cache.glob("*.so")) == sorted(
        [first.model.library.name, second.model.library.name]
    )
    rows = random_rows(booster.num_feature(), count=500)
    assert np.array_equal(second.model.predict(rows), expected(booster, rows))


def test_a_damaged_cached_library_is_compiled_again(demo: Built, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    library = library_path(cache, file_digest(demo.path))
    cache.mkdir()
    library.write_bytes(b"not a library")
    rebuilt = compile_model(demo.path, demo.booster, cache_dir=cache)
    assert not rebuilt.reused
    assert library.stat().st_size > 1_000


def test_a_library_of_another_model_is_refused(demo: Built, with_missing: Built) -> None:
    with pytest.raises(CompileError, match="features"):
        verify(demo.booster, with_missing.compiled)


def test_a_library_that_scores_differently_is_refused(demo: Built, tmp_path: Path) -> None:
    other = lgb.Booster(model_file=str(_retrain(tmp_path / "model.txt")))
    assert other.num_feature() == demo.booster.num_feature()
    with pytest.raises(CompileError, match=r"differ from Booster\.predict"):
        verify(other, demo.compiled)


def test_load_model_scores_through_the_library(
    demo: Built, cache_dir: Path, model: LoadedModel
) -> None:
    compiled = load_model(demo.path, backend=BackendChoice("compiled", cache_dir))
    assert compiled.backend == "compiled"
    assert compiled.backend_error is None
    rows = rows_at_thresholds(demo.booster)
    assert np.array_equal(compiled.predict(rows), model.predict(rows))
    # reason codes stay LightGBM's pred_contrib
    assert np.array_equal(compiled.contributions(rows), model.contributions(rows))
    assert load_model(demo.path).backend == "lightgbm"


def test_without_a_compiler_lightgbm_scores_with_a_warning(
    demo: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="scoring.model"):
        loaded = load_model(demo.path, backend=BackendChoice("compiled", tmp_path / "cache"))
    assert loaded.backend == "lightgbm"
    assert loaded.backend_error is not None
    assert "no-such-cc" in loaded.backend_error
    [record] = [r for r in caplog.records if getattr(r, "event", None)]
    assert record.event == "compiled_backend_fallback"  # type: ignore[attr-defined]
    assert "no-such-cc" in record.getMessage()
    rows = random_rows(demo.booster.num_feature(), count=100)
    assert np.array_equal(loaded.predict(rows), expected(demo.booster, rows))

    pipeline = ScoringPipeline(loaded, MemoryFeatures({}), ThreadPoolExecutor(1))
    assert pipeline.metrics.value("streamscore_model_backend_fallbacks_total", role="model") == 1
    assert pipeline.metrics.value("streamscore_model_backend", role="model", backend="lightgbm")
    assert not pipeline.metrics.value("streamscore_model_backend", role="model", backend="compiled")


def test_auto_is_the_default_and_compiles_where_a_compiler_is_found(
    demo: Built, cache_dir: Path, model: LoadedModel
) -> None:
    assert load_settings().model.backend == "auto"
    assert BackendChoice().backend == "auto"
    loaded = load_model(demo.path, backend=BackendChoice("auto", cache_dir))
    assert loaded.backend == "compiled"
    assert loaded.backend_error is None
    rows = rows_at_thresholds(demo.booster)
    assert np.array_equal(loaded.predict(rows), model.predict(rows))


@pytest.mark.parametrize("missing", ["compiler", "packages"])
def test_auto_without_a_compiler_or_tl2cgen_scores_with_lightgbm_and_no_warning(
    missing: str,
    demo: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if missing == "compiler":
        monkeypatch.setenv("CC", f"{tmp_path / 'no-such-cc'} -m64")
        named = "no-such-cc"
    else:

        def no_packages() -> None:
            raise ModuleNotFoundError("No module named 'tl2cgen'")

        monkeypatch.setattr("scoring.compiled.packages", no_packages)
        named = "tl2cgen"
    assert named in (compiler_missing() or "")
    with caplog.at_level(logging.INFO, logger="scoring.model"):
        loaded = load_model(demo.path, backend=BackendChoice("auto", tmp_path / "cache"))
    assert loaded.backend == "lightgbm"
    assert loaded.backend_error is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [record] = [r for r in caplog.records if getattr(r, "event", None)]
    assert record.event == "compiled_backend_unused"  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert named in record.getMessage()
    assert not (tmp_path / "cache").exists()  # nothing was tried
    rows = random_rows(demo.booster.num_feature(), count=100)
    assert np.array_equal(loaded.predict(rows), expected(demo.booster, rows))
    pipeline = ScoringPipeline(loaded, MemoryFeatures({}), ThreadPoolExecutor(1))
    assert pipeline.metrics.value("streamscore_model_backend_fallbacks_total", role="model") == 0
    assert pipeline.metrics.value("streamscore_model_backend", role="model", backend="lightgbm")


def test_auto_with_a_model_that_fails_the_check_scores_with_lightgbm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _train_with_missing(tmp_path / "zero.txt", zero_as_missing=True)
    with caplog.at_level(logging.INFO, logger="scoring.model"):
        loaded = load_model(path, backend=BackendChoice("auto", tmp_path / "cache"))
    assert loaded.backend == "lightgbm"
    assert loaded.backend_error is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [record] = [r for r in caplog.records if getattr(r, "event", None)]
    assert record.event == "compiled_backend_unused"  # type: ignore[attr-defined]
    assert "differ from Booster.predict" in record.getMessage()


async def test_a_reload_compiles_the_new_model_off_the_event_loop(
    demo: Built, tmp_path: Path
) -> None:
    backend = BackendChoice("compiled", tmp_path / "cache")
    path = copy_model(demo.path, tmp_path / "model.txt")
    first = load_model(path, backend=backend)
    pipeline = ScoringPipeline(first, MemoryFeatures({}), ThreadPoolExecutor(1))
    assert pipeline.metrics.value("streamscore_model_backend", role="model", backend="compiled")
    _retrain(path)
    reloader = ModelReloader(path, pipeline, interval_s=0, backend=backend)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    swapped = await reloader.reload()
    elapsed = time.perf_counter() - started
    ticker.cancel()

    assert swapped.version == "2"
    assert swapped.backend == "compiled"
    assert pipeline.model is swapped
    assert swapped.compiled is not None
    assert swapped.compiled.digest == file_digest(path)
    assert ticks >= elapsed / 0.01 / 4  # the loop kept running while it compiled
    rows = rows_at_thresholds(swapped.booster)
    assert np.array_equal(swapped.predict(rows), expected(swapped.booster, rows))
    shutil.rmtree(tmp_path / "cache")


async def test_the_service_opens_main_and_challenger_compiled(
    demo: Built, cache_dir: Path, tmp_path: Path
) -> None:
    challenger = _retrain(tmp_path / "challenger.txt")
    settings = load_settings(
        model={"path": demo.path, "backend": "compiled", "compiled_cache_dir": cache_dir},
        challenger={"path": challenger},
        mongo={"url": "mongodb://127.0.0.1:9/"},  # never reached: nothing is scored here
    )
    async with open_scoring(settings) as service:
        main, shadow = service.pipeline.model, service.pipeline.challenger
        assert main.backend == "compiled"
        assert shadow is not None
        assert shadow.backend == "compiled"
        m = service.metrics
        assert m.value("streamscore_model_backend", role="challenger", backend="compiled") == 1
        assert m.value("streamscore_model_backend_fallbacks_total", role="model") == 0


def test_rows_holding_the_largest_double_score_as_booster_predict(
    demo: Built, cache_dir: Path
) -> None:
    """±DBL_MAX goes the other way at a split on an infinite threshold in the compiled trees;
    such rows are scored by LightGBM, the rest of their batch by the library."""
    width = demo.booster.num_feature()
    top = float(np.finfo(np.float64).max)
    extreme = []
    for feature in range(width):
        for value in (top, -top):
            row = np.full(width, np.nan)
            row[feature] = value
            extreme.append(row)
    extreme_rows = np.array(extreme)
    # The library alone differs on them (what this guards against).
    assert not np.array_equal(
        demo.compiled.predict(extreme_rows), expected(demo.booster, extreme_rows)
    )
    compiled = load_model(demo.path, backend=BackendChoice("compiled", cache_dir))
    assert compiled.backend == "compiled"
    for rows in (
        extreme_rows,
        np.vstack([random_rows(width, 40), extreme_rows, random_rows(width, 40, seed=5)]),
    ):
        assert np.array_equal(compiled.predict(rows), expected(demo.booster, rows))


def test_values_whose_low_bits_read_as_missing_score_as_booster_predict(
    demo: Built, cache_dir: Path
) -> None:
    """The generated code keeps a value and its "missing" mark (the int -1) in the same
    bytes, so a double whose low 32 bits are all ones (2**53 - 1 is one) reads as missing
    there: such rows are scored by LightGBM."""
    width = demo.booster.num_feature()
    aliased = [
        float(2**53 - 1),
        -float(2**53 - 1),
        np.array([0x408F4000FFFFFFFF], dtype=np.uint64).view(np.float64)[0],  # ~1000.0005
        np.array([0x3FB99999FFFFFFFF], dtype=np.uint64).view(np.float64)[0],  # ~0.1
    ]
    rows = []
    for feature in range(width):
        for value in aliased:
            row = random_rows(width, 1, seed=feature)[0]
            row[feature] = value
            rows.append(row)
    odd = np.array(rows)
    assert not np.array_equal(demo.compiled.predict(odd), expected(demo.booster, odd))
    compiled = load_model(demo.path, backend=BackendChoice("compiled", cache_dir))
    assert compiled.backend == "compiled"
    mixed = np.vstack([random_rows(width, 30), odd, random_rows(width, 30, seed=9)])
    for batch in (odd, mixed):
        assert np.array_equal(compiled.predict(batch), expected(demo.booster, batch))
