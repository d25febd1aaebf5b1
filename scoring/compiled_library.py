"""A compiled model library loaded in this process, scoring batches through tl2cgen's C API.

:mod:`scoring.compiled` builds, caches and verifies the libraries; this module loads one and
calls it, with LightGBM's reading of the input (values within 1e-35 of zero are zero).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

ZERO_THRESHOLD = float(np.float32(1e-35))
"""LightGBM's ``kZeroThreshold``: it reads any value of at most this magnitude as 0.0."""
_lock = threading.Lock()
_loaded: tuple[Any, Any] | None = None


def _log_native(message: bytes) -> None:
    log.debug("tl2cgen: %s", message.decode("utf-8", "replace").strip())


_native_log = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(_log_native)
"""Kept alive here: the native library calls it for as long as the process runs."""


def packages() -> tuple[Any, Any]:
    """treelite and tl2cgen, imported on first use (a machine without them scores with
    LightGBM). Neither annotates its functions, hence ``Any``. tl2cgen's native log lines
    (which it prints to stdout) go to this module's logger at DEBUG instead."""
    global _loaded
    with _lock:
        if _loaded is None:
            treelite: ModuleType = importlib.import_module("treelite")
            tl2cgen: ModuleType = importlib.import_module("tl2cgen")
            native = getattr(getattr(tl2cgen, "libloader", None), "_LIB", None)
            if native is not None:
                native.TL2cgenRegisterLogCallback(_native_log)
            _loaded = (treelite, tl2cgen)
        return _loaded


class CompileError(Exception):
    """The model could not be compiled, loaded or verified; LightGBM keeps scoring."""


class _CApi:
    """The three calls of tl2cgen's C API one batch needs (its Python wrapper makes eight,
    which cost more than scoring one row). A handle of its own on tl2cgen's library, so
    these argument types never touch the wrapper's."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        handle = ctypes.POINTER(ctypes.c_void_p)
        self.create = lib.TL2cgenDMatrixCreateFromMat
        self.create.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.c_void_p,
            handle,
        ]
        self.create.restype = ctypes.c_int
        self.predict = lib.TL2cgenPredictorPredictBatch
        self.predict.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self.predict.restype = ctypes.c_int
        self.free = lib.TL2cgenDMatrixFree
        self.free.argtypes = [ctypes.c_void_p]
        self.free.restype = ctypes.c_int
        self.last_error = lib.TL2cgenGetLastError
        self.last_error.restype = ctypes.c_char_p

    def check(self, status: int) -> None:
        if status != 0:
            message = self.last_error() or b"unknown error"
            raise CompileError(f"tl2cgen: {message.decode('utf-8', 'replace')}")


_capi: _CApi | None = None


def _c_api() -> _CApi:
    global _capi
    if _capi is None:
        _capi = _CApi(str(packages()[1].libloader._LIB.path))
    return _capi


_FLOAT64 = b"float64"
_MISSING = np.array([np.nan], dtype=np.float64)


class CompiledModel:
    """A compiled model library, scoring a (rows x features) float64 matrix.

    tl2cgen's predictor may be used by one thread at a time, so each executor thread gets its
    own (over the one loaded library). Its calls release the GIL (ctypes).
    """

    def __init__(self, library: Path, *, digest: str, threads: int = 1) -> None:
        self.library = library
        self.digest = digest
        self._threads = threads if threads > 0 else None
        self._local = threading.local()
        self._api = _c_api()
        predictor = self._predictor()
        if predictor.leaf_output_type != "float64" or predictor.threshold_type != "float64":
            raise CompileError(
                f"the library computes in {predictor.threshold_type}/"
                f"{predictor.leaf_output_type}, not float64 like LightGBM"
            )
        self.num_features = int(predictor.num_feature)
        self._outputs = int(predictor.num_target) * int(max(predictor.num_class))
        """Values per row in the output: targets x classes."""

    def _predictor(self) -> Any:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            predictor = packages()[1].Predictor(self.library, nthread=self._threads)
            self._local.predictor = predictor
        return predictor

    def predict(self, matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One score per row: what ``Booster.predict`` returns (its last output). Values of
        magnitude at most 1e-35 are scored as 0.0, as LightGBM does."""
        rows, columns = matrix.shape
        if columns != self.num_features:  # as LightGBM refuses it (tl2cgen would not)
            raise ValueError(f"{columns} columns for a model of {self.num_features} features")
        if rows == 0:
            return np.empty(0, dtype=np.float64)
        data = np.array(matrix, dtype=np.float64, order="C")  # a copy, changed below
        data[np.abs(data) <= ZERO_THRESHOLD] = 0.0  # as LightGBM reads its input
        out = np.zeros((rows, self._outputs), dtype=np.float64)  # the library adds into it
        api, dmatrix = self._api, ctypes.c_void_p()
        api.check(
            api.create(data.ctypes.data, _FLOAT64, rows, columns, _MISSING.ctypes.data, dmatrix)
        )
        try:
            api.check(api.predict(self._predictor().handle, dmatrix, 0, 0, out.ctypes.data))
        finally:
            api.free(dmatrix)
        return out[:, -1]
