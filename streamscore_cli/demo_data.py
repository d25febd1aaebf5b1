"""A synthetic, fraud-like data set from a fixed seed: entity features, events and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EVENT_FEATURES = ("amount", "hour", "is_new_device", "merchant_risk", "distance_km")
ENTITY_FEATURES = (
    "account_age_days",
    "avg_amount_30d",
    "txn_count_30d",
    "country_risk",
    "chargebacks_90d",
)
FEATURE_NAMES = EVENT_FEATURES + ENTITY_FEATURES
DEFAULT_ENTITIES = 20_000
DEFAULT_SEED = 7

Array = npt.NDArray[np.float64]


def entity_id(index: int) -> str:
    return f"user-{index:06d}"


@dataclass(frozen=True)
class Entities:
    ids: list[str]
    features: Array  # (n, len(ENTITY_FEATURES))


def make_entities(count: int = DEFAULT_ENTITIES, seed: int = DEFAULT_SEED) -> Entities:
    rng = np.random.default_rng(seed)
    age = rng.gamma(2.0, 400.0, count).clip(1, 5_000).round()
    avg = rng.lognormal(3.6, 0.8, count).round(2)
    txn = rng.poisson(20, count).astype(np.float64)
    country = rng.beta(1.5, 8.0, count).round(3)
    chargebacks = rng.poisson(0.15, count).astype(np.float64)
    return Entities(
        ids=[entity_id(i) for i in range(count)],
        features=np.column_stack([age, avg, txn, country, chargebacks]),
    )


def make_events(
    entities: Entities, count: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], Array]:
    """Pick an entity per event and draw the event features (n, len(EVENT_FEATURES))."""
    who = rng.integers(0, len(entities.ids), count)
    avg = entities.features[who, 1]
    spike = rng.random(count) < 0.08
    amount = avg * rng.lognormal(0.0, 0.5, count) * np.where(spike, rng.uniform(3, 12, count), 1)
    hour = rng.integers(0, 24, count).astype(np.float64)
    new_device = (rng.random(count) < 0.1).astype(np.float64)
    merchant = rng.beta(2.0, 6.0, count).round(3)
    distance = rng.exponential(15.0, count).round(1)
    return who, np.column_stack([amount.round(2), hour, new_device, merchant, distance])


def fraud_probability(entity_rows: Array, event_rows: Array) -> Array:
    age, avg, txn, country, chargebacks = entity_rows.T
    amount, hour, new_device, merchant, distance = event_rows.T
    night = ((hour >= 23) | (hour <= 4)).astype(np.float64)
    logit = (
        -5.2
        + 1.4 * np.log1p(amount / (avg + 1.0))
        + 1.1 * night
        + 1.3 * new_device
        + 2.2 * merchant
        + 2.5 * country
        + 0.9 * chargebacks
        - 0.0008 * age
        + 0.01 * distance
        - 0.01 * txn
    )
    result: Array = 1.0 / (1.0 + np.exp(-logit))
    return result


def make_training_set(
    rows: int, entities: Entities, seed: int = DEFAULT_SEED
) -> tuple[Array, npt.NDArray[np.int64]]:
    """Feature matrix in FEATURE_NAMES order, with labels drawn from the fraud probability."""
    rng = np.random.default_rng(seed + 1)
    who, events = make_events(entities, rows, rng)
    stored = entities.features[who]
    labels = (rng.random(rows) < fraud_probability(stored, events)).astype(np.int64)
    matrix = np.column_stack([events, stored])
    # Some values are missing in real traffic; the model learns to live with NaN.
    holes = rng.random(matrix.shape) < 0.02
    matrix[holes] = np.nan
    return matrix, labels


def auc(labels: npt.NDArray[np.int64], scores: Array) -> float:
    """Area under the ROC curve (rank statistic, ties averaged)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
