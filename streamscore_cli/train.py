"""``streamscore train``: fit the demo LightGBM model and write it with its metadata."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np

from scoring.model import metadata_path
from streamscore_cli import demo_data


def train(
    path: Path,
    *,
    rows: int = 120_000,
    trees: int = 300,
    seed: int = demo_data.DEFAULT_SEED,
    name: str = "fraud",
    version: str = "1",
) -> float:
    """Train on a synthetic set, print and return the held-out AUC, write model + metadata."""
    entities = demo_data.make_entities(seed=seed)
    matrix, labels = demo_data.make_training_set(rows, entities, seed=seed)
    cut = int(rows * 0.8)
    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }
    train_set = lgb.Dataset(matrix[:cut], labels[:cut], feature_name=list(demo_data.FEATURE_NAMES))
    booster = lgb.train(params, train_set, num_boost_round=trees)
    held_out = np.asarray(booster.predict(matrix[cut:]), dtype=np.float64)
    score = demo_data.auc(labels[cut:], held_out)
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    metadata = {
        "name": name,
        "version": version,
        "feature_names": list(demo_data.FEATURE_NAMES),
        "trained_at": datetime.now(UTC).isoformat(),
        "trees": trees,
        "training_rows": cut,
        "held_out_rows": rows - cut,
        "held_out_auc": round(score, 5),
        "positive_rate": round(float(labels.mean()), 5),
        "seed": seed,
    }
    metadata_path(path).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return score
