"""Helpers of the challenger and reason-code tests: a second model, the contract's vectors,
offline contributions."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from scoring import LoadedModel
from scoring.model import metadata_path
from streamscore_cli.train import train

CHALLENGER_NAME = "fraud-challenger"


def train_challenger(path: Path, version: str = "c1") -> Path:
    """A model on the demo features that scores differently from the small main model (fewer
    rows and trees, another name)."""
    train(path, rows=8_000, trees=12, version=version, name=CHALLENGER_NAME)
    return path


def copy_model(source: Path, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    shutil.copyfile(metadata_path(source), metadata_path(destination))
    return destination


def unfillable_model(path: Path) -> Path:
    """A valid LightGBM model whose feature name (``a.b``) no event or projection can fill."""
    rng = np.random.default_rng(1)
    x = rng.random((200, 2))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5},
        lgb.Dataset(x, (x[:, 0] > 0.5).astype(float), feature_name=["a.b", "c"]),
        num_boost_round=3,
    )
    booster.save_model(str(path))
    metadata_path(path).write_text(json.dumps({"name": "dotted", "version": "9"}))
    return path


def vectors(
    model: LoadedModel,
    events: Sequence[Mapping[str, Any]],
    stored: Mapping[str, Mapping[str, float]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The contract's vectors of ``events`` in ``model``'s feature order."""
    rows = []
    for event in events:
        own, kept = event.get("features", {}), stored.get(event["entity_id"], {})
        values = [kept.get(n) if own.get(n) is None else own[n] for n in model.feature_names]
        rows.append([math.nan if v is None else float(v) for v in values])
    return np.array(rows, dtype=np.float64)


def offline_reasons(
    model: LoadedModel, matrix: np.ndarray[Any, np.dtype[np.float64]], count: int
) -> list[list[dict[str, Any]]]:
    """Top ``count`` features per row by absolute ``pred_contrib``, as the contract writes them."""
    contributions = np.asarray(model.booster.predict(matrix, pred_contrib=True))[:, :-1]
    result = []
    for row, values in zip(contributions, matrix, strict=True):
        order = sorted(range(len(row)), key=lambda col: (-abs(row[col]), col))[:count]
        result.append(
            [
                {
                    "feature": model.feature_names[col],
                    "value": None if math.isnan(values[col]) else float(values[col]),
                    "contribution": float(row[col]),
                }
                for col in order
            ]
        )
    return result
