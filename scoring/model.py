"""Loading a LightGBM model with its metadata, and calling it on a whole batch."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from scoring.compiled import Backend, BackendChoice, compile_model, compiler_missing
from scoring.compiled_library import CompiledModel, CompileError
from scoring.errors import ModelLoadError
from scoring.model_trial import trial_load

_DOUBLE_MAX = float(np.finfo(np.float64).max)
_LOW_32_BITS = np.uint64(0xFFFFFFFF)
_FILLABLE = re.compile(r"^[^.$\x00][^.\x00]*$")

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float64]


def metadata_path(model_path: Path) -> Path:
    """The metadata file that goes with a model file: ``model.txt`` -> ``model.json``."""
    return model_path.with_suffix(".json")


@dataclass(frozen=True)
class LoadedModel:
    """A booster plus what a prediction needs to say about it."""

    booster: lgb.Booster
    name: str
    version: str
    feature_names: tuple[str, ...]
    path: Path
    loaded_at: datetime
    threads: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    compiled: CompiledModel | None = None
    """The native library that scores instead of the booster (identical scores, see
    :mod:`scoring.compiled`); None: the booster scores."""
    backend_error: str | None = None
    """Why LightGBM scores although the compiled backend was asked for explicitly (None
    otherwise, and with ``auto``)."""

    @property
    def backend(self) -> Backend:
        """What executes :meth:`predict`; contributions always come from the booster."""
        return "compiled" if self.compiled is not None else "lightgbm"

    def predict(self, matrix: Matrix) -> npt.NDArray[np.float64]:
        """Score a (rows x features) matrix in one call. Releases the GIL while it runs."""
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self.compiled is not None:
            extreme = compiled_cannot_score(matrix)
            if not extreme.any():
                return self.compiled.predict(matrix)
            scores = np.empty(matrix.shape[0], dtype=np.float64)
            scores[extreme] = self._booster_predict(matrix[extreme])
            if not extreme.all():
                scores[~extreme] = self.compiled.predict(matrix[~extreme])
            return scores
        return self._booster_predict(matrix)

    def _booster_predict(self, matrix: Matrix) -> npt.NDArray[np.float64]:
        params: dict[str, Any] = {}
        if self.threads > 0:
            params["num_threads"] = self.threads
        result = self.booster.predict(matrix, validate_features=False, **params)
        return np.asarray(result, dtype=np.float64).reshape(matrix.shape[0], -1)[:, -1]

    def contributions(self, matrix: Matrix) -> Matrix:
        """Per row: each feature's contribution to the raw score, then the expected value
        (LightGBM ``pred_contrib``; rows x (features + 1)). A row's values add up to its raw
        score. Releases the GIL while it runs."""
        width = len(self.feature_names) + 1
        if matrix.shape[0] == 0:
            return np.empty((0, width), dtype=np.float64)
        params: dict[str, Any] = {"pred_contrib": True}
        if self.threads > 0:
            params["num_threads"] = self.threads
        result = self.booster.predict(matrix, validate_features=False, **params)
        # A multi-output model gives one block per output; the score is the last output's.
        return np.asarray(result, dtype=np.float64).reshape(matrix.shape[0], -1)[:, -width:]


def compiled_cannot_score(matrix: Matrix) -> npt.NDArray[np.bool_]:
    """Per row, whether it holds a value the compiled trees would score differently from
    LightGBM (LightGBM scores those rows):

    - exactly ±DBL_MAX, which falls the other way at a split whose threshold is infinite in
      the compiled trees;
    - a number whose low 32 bits are all ones (``2**53 - 1``, JavaScript's
      ``Number.MAX_SAFE_INTEGER``, is one): the generated code keeps a value and its
      "missing" mark (the int -1) in the same 8 bytes, so such a value reads as missing.
    """
    bits = np.ascontiguousarray(matrix, dtype=np.float64).view(np.uint64)
    aliased = (bits & _LOW_32_BITS) == _LOW_32_BITS
    rows: npt.NDArray[np.bool_] = (aliased | (np.abs(matrix) == _DOUBLE_MAX)).any(axis=1)
    return rows


def check_feature_names(candidate: LoadedModel) -> None:
    """Raise :class:`ModelLoadError` unless every feature name of ``candidate`` is one the
    pipeline can fill: a plain, unique name that can be read from events and projected from
    MongoDB (no ``.``, no leading ``$``)."""
    names = candidate.feature_names
    if not names:
        raise ModelLoadError("the model has no features")
    bad = [n for n in names if not _FILLABLE.match(n)]
    if bad:
        raise ModelLoadError(f"feature names the pipeline cannot fill: {bad}")
    if len(set(names)) != len(names):
        raise ModelLoadError("duplicate feature names")


def _check_outputs(booster: lgb.Booster, path: Path) -> None:
    """Refuse a model with more than one output per row (multiclass): a prediction carries
    one score, and picking one class's probability would be a silent guess."""
    outputs = int(booster.num_model_per_iteration())
    if outputs != 1:
        raise ModelLoadError(
            f"{path} has {outputs} outputs per row (a multiclass model); streamscore scores "
            "models with one output: binary (the score is the probability) or regression"
        )


def _check_metadata(metadata: Any, meta_file: Path) -> None:
    """Refuse metadata of the wrong shape with a :class:`ModelLoadError`, never a TypeError."""
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"model metadata {meta_file} must be a JSON object")
    for key in ("name", "version"):
        value = metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise ModelLoadError(
                f"model metadata {meta_file}: '{key}' must be a non-empty string or integer"
            )
    declared = metadata.get("feature_names")
    if declared is not None and (
        not isinstance(declared, list) or not all(isinstance(n, str) for n in declared)
    ):
        raise ModelLoadError(
            f"model metadata {meta_file}: 'feature_names' must be a list of strings"
        )


def model_text(path: Path) -> str:
    """The text of the LightGBM model file ``path``, read once, when it is whole.

    LightGBM does not refuse a model file cut inside its trees (a copy or write still under
    way, a full disk): it aborts or crashes the process. So a file is loaded only when it is a
    text model whose trees end (``end of trees``) and fill exactly the bytes its
    ``tree_sizes`` line gives; the very text checked is what is loaded.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ModelLoadError(f"model file unreadable: {path}: {exc}") from exc
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path} is not a LightGBM text model (not UTF-8)") from None
    if text.startswith("tree\r\n"):  # copied through Windows (git autocrlf): read as written
        text = text.replace("\r\n", "\n")
    if not text.startswith("tree\n"):
        raise ModelLoadError(f"{path} is not a LightGBM text model (it must start with 'tree')")
    first, end = text.find("\nTree="), text.find("\nend of trees")
    if first < 0 or end < first:
        raise ModelLoadError(
            f"{path} is incomplete: its trees do not end ('end of trees' missing; a copy or "
            "write still under way?)"
        )
    sizes_at = text.find("\ntree_sizes=")
    if 0 <= sizes_at < first:
        line = text[sizes_at + len("\ntree_sizes=") : text.index("\n", sizes_at + 1)]
        try:
            expected = sum(int(size) for size in line.split())
        except ValueError:
            raise ModelLoadError(f"{path}: its tree_sizes line is not a list of sizes") from None
        if end - first != expected:
            raise ModelLoadError(
                f"{path} is damaged: its trees take {end - first} bytes, its tree_sizes line "
                f"says {expected}"
            )
    return text


def load_model(
    path: Path, *, threads: int = 1, backend: BackendChoice | None = None
) -> LoadedModel:
    """Load ``path`` (LightGBM text or binary model) and its ``.json`` metadata.

    The metadata file holds ``name`` and ``version``; ``feature_names``, when present, must
    match the booster's own. Raises :class:`ModelLoadError` with the reason otherwise.
    With ``backend`` asking for ``compiled`` or ``auto``, the model is also compiled (or taken
    from the cache; seconds the first time, so never on the event loop) and scores through the
    library; when that cannot be done, the booster scores (see :func:`with_backend`).
    """
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    meta_file = metadata_path(path)
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model metadata not found: {meta_file}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model metadata unreadable: {meta_file}: {exc}") from exc
    _check_metadata(metadata, meta_file)
    text = model_text(path)
    trial_load(text, str(path))  # a text that aborts or hangs LightGBM does so in a child
    try:
        booster = lgb.Booster(model_str=text)
    except (lgb.basic.LightGBMError, ValueError) as exc:
        raise ModelLoadError(f"LightGBM could not load {path}: {exc}") from exc
    _check_outputs(booster, path)
    names = tuple(str(n) for n in booster.feature_name())
    declared = metadata.get("feature_names")
    if declared is not None and tuple(declared) != names:
        raise ModelLoadError(
            f"feature_names in {meta_file} {list(declared)} differ from the model's {list(names)}"
        )
    model = LoadedModel(
        booster=booster,
        name=str(metadata["name"]),
        version=str(metadata["version"]),
        feature_names=names,
        path=path,
        loaded_at=datetime.now(UTC),
        threads=threads,
        metadata=metadata,
    )
    check_feature_names(model)
    probe = model.predict(np.full((1, len(names)), np.nan))
    if probe.shape != (1,) or not math.isfinite(float(probe[0])):
        raise ModelLoadError(f"model {path} does not score an all-missing row to a finite number")
    if backend is not None and backend.backend != "lightgbm":
        return with_backend(model, backend)
    return model


def with_backend(model: LoadedModel, backend: BackendChoice) -> LoadedModel:
    """``model`` scoring through its compiled library.

    1. The library's scores equal the booster's bit for bit on the model's split thresholds
       (:func:`scoring.compiled.compile_model`), or it is not used.
    2. Never raises for the backend. Asked for ``compiled``: when compiling, loading or
       verifying fails, a warning naming the error is logged
       (``"event": "compiled_backend_fallback"``) and the model scores with LightGBM, its
       ``backend_error`` set (the pipeline counts it). Asked for ``auto``: without tl2cgen or a
       C compiler nothing is tried; then, or when compiling fails, an info line says why
       (``"event": "compiled_backend_unused"``) and LightGBM scores, which is no fault.
    """
    if backend.backend == "auto" and (missing := compiler_missing()) is not None:
        _log_unused(model, f"this machine lacks {missing}")
        return model
    try:
        compiled = compile_model(
            model.path, model.booster, cache_dir=backend.cache_dir, threads=model.threads
        )
    except CompileError as exc:
        if backend.backend == "auto":
            _log_unused(model, str(exc))
            return model
        log.warning(
            "compiled backend unavailable for %s:%s, scoring with LightGBM: %s",
            model.name,
            model.version,
            exc,
            extra={"event": "compiled_backend_fallback", "path": str(model.path)},
        )
        return dataclasses.replace(model, backend_error=str(exc))
    log.info(
        "model %s:%s scores through %s (%s in %.1f s)",
        model.name,
        model.version,
        compiled.model.library,
        "cached" if compiled.reused else "compiled",
        compiled.seconds,
        extra={"event": "model_compiled", "path": str(model.path)},
    )
    return dataclasses.replace(model, compiled=compiled.model)


def _log_unused(model: LoadedModel, why: str) -> None:
    log.info(
        "model %s:%s scores with LightGBM (compiled trees unused: %s)",
        model.name,
        model.version,
        why,
        extra={"event": "compiled_backend_unused", "path": str(model.path)},
    )
