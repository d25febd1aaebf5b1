"""A compiled model library in this process: every batch size and layout, many threads at
once, LightGBM's reading of values near zero, the C API's errors."""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pytest

from scoring.compiled import compile_model
from scoring.compiled_library import ZERO_THRESHOLD, CompiledModel, CompileError

Matrix = npt.NDArray[np.float64]


@pytest.fixture(scope="session")
def booster(model_path: Path) -> lgb.Booster:
    return lgb.Booster(model_file=str(model_path))


@pytest.fixture(scope="session")
def library(
    model_path: Path, booster: lgb.Booster, tmp_path_factory: pytest.TempPathFactory
) -> CompiledModel:
    # the session cache test_compiled uses too: the test model is compiled once
    cache = tmp_path_factory.getbasetemp() / "compiled-cache"
    return compile_model(model_path, booster, cache_dir=cache).model


def rows(width: int, count: int, seed: int) -> Matrix:
    rng = np.random.default_rng(seed)
    matrix: Matrix = rng.normal(size=(count, width)) * 100
    matrix[rng.random(matrix.shape) < 0.15] = np.nan
    return matrix


def expected(booster: lgb.Booster, matrix: Matrix) -> Matrix:
    scores: Matrix = np.asarray(booster.predict(matrix, num_threads=1), dtype=np.float64)
    return scores


def test_every_batch_size_and_layout_scores_identically(
    library: CompiledModel, booster: lgb.Booster
) -> None:
    matrix = rows(library.num_features, 500, seed=3)
    reference = expected(booster, matrix)
    for size in (1, 2, 64, 500):
        assert np.array_equal(library.predict(matrix[:size]), reference[:size])
    assert np.array_equal(library.predict(matrix[::2]), reference[::2])  # not contiguous
    assert np.array_equal(library.predict(np.asfortranarray(matrix)), reference)
    assert library.predict(matrix[:0]).shape == (0,)


def test_the_callers_matrix_is_left_as_it_was(library: CompiledModel) -> None:
    matrix = rows(library.num_features, 10, seed=5)
    matrix[:, 0] = 1e-36
    before = matrix.copy()
    library.predict(matrix)
    assert np.array_equal(matrix, before, equal_nan=True)


def test_values_within_lightgbms_zero_bound_score_as_zero(
    library: CompiledModel, booster: lgb.Booster
) -> None:
    matrix = rows(library.num_features, 8, seed=6)
    tiny = [ZERO_THRESHOLD, -ZERO_THRESHOLD, 1e-36, -1e-300, 5e-324, 0.0, -0.0, 1e-34]
    for feature in range(library.num_features):
        at = matrix.copy()
        at[:, feature] = tiny
        assert np.array_equal(library.predict(at), expected(booster, at))


def test_executor_threads_score_at_once_identically(
    library: CompiledModel, booster: lgb.Booster
) -> None:
    matrix = rows(library.num_features, 2_000, seed=4)
    reference = expected(booster, matrix)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(library.predict, [matrix] * 16))
    assert all(np.array_equal(r, reference) for r in results)


def test_a_file_that_is_no_library_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.so"
    bogus.write_bytes(b"not a library")
    with pytest.raises(Exception, match=r"model\.so"):
        CompiledModel(bogus, digest="0" * 64)


def test_a_matrix_of_another_width_is_refused(library: CompiledModel) -> None:
    for width in (library.num_features - 1, library.num_features + 1):
        with pytest.raises(ValueError, match="columns for a model of"):
            library.predict(np.zeros((2, width)))


def test_a_c_api_error_is_a_compile_error(library: CompiledModel) -> None:
    api, wide = library._api, np.zeros((2, library.num_features + 2))
    missing, handle = np.array([np.nan]), ctypes.c_void_p()
    api.check(
        api.create(wide.ctypes.data, b"float64", 2, wide.shape[1], missing.ctypes.data, handle)
    )
    out = np.zeros(2)
    try:
        with pytest.raises(CompileError, match=r"tl2cgen: .*Too many columns"):
            api.check(api.predict(library._predictor().handle, handle, 0, 0, out.ctypes.data))
    finally:
        api.free(handle)
