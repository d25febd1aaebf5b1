"""Helpers shared by the tests: a small trained model and an in-memory feature source."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoring import EnrichmentUnavailable, LoadedModel, StoredFeatures
from streamscore_cli.train import train


def train_small_model(path: Path, version: str = "1") -> Path:
    """The demo model, smaller: same features, fewer rows and trees (about a second)."""
    train(path, rows=20_000, trees=40, version=version)
    return path


class MemoryFeatures:
    """A :class:`scoring.FeatureSource` over a dict; can be told to fail N times."""

    def __init__(self, documents: Mapping[str, StoredFeatures], failures: int = 0) -> None:
        self.documents = documents
        self.failures = failures
        self.calls: list[list[str]] = []

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        self.calls.append(list(entity_ids))
        if self.failures > 0:
            self.failures -= 1
            raise EnrichmentUnavailable("MongoDB read failed: simulated outage")
        return {i: self.documents[i] for i in entity_ids if i in self.documents}

    async def ping(self) -> None:
        if self.failures > 0:
            raise EnrichmentUnavailable("MongoDB ping failed: simulated outage")

    def use_features(self, feature_names: Sequence[str]) -> None:
        return None


def event_bytes(index: int, entity: str, prefix: str = "e") -> bytes:
    """A valid input event with a few of the demo model's features."""
    import json

    return json.dumps(
        {
            "event_id": f"{prefix}-{index:06d}",
            "entity_id": entity,
            "features": {"amount": 10.0 + index % 500, "hour": index % 24},
        }
    ).encode()


def entity_documents(count: int) -> list[dict[str, object]]:
    """Small entity documents ``user-0`` .. ``user-{count-1}``."""
    return [
        {
            "_id": f"user-{i}",
            "features": {"account_age_days": 10 + i, "avg_amount_30d": 20.0 + i % 50},
            "updated_at": "2026-11-20T08:00:00Z",
        }
        for i in range(count)
    ]


def random_entity_documents(count: int, seed: int) -> list[dict[str, Any]]:
    """Entity documents ``user-0`` .. with varied stored features (a fixed seed per test)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        {
            "_id": f"user-{i}",
            "features": {
                "account_age_days": int(rng.integers(1, 3000)),
                "avg_amount_30d": float(rng.lognormal(3.5, 0.7)),
                "txn_count_30d": int(rng.poisson(20)),
                "country_risk": float(rng.random()),
            },
            "updated_at": "2026-11-20T08:00:00Z",
        }
        for i in range(count)
    ]


async def eventually(
    check: Callable[[], Awaitable[bool]], within_s: float, every_s: float = 0.2
) -> bool:
    """Poll ``check`` until it is true or ``within_s`` seconds passed; returns the last answer."""
    import asyncio
    import time

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every_s)
    return False


def offline_scores(
    model: LoadedModel,
    events: Sequence[Mapping[str, Any]],
    stored: Mapping[str, Mapping[str, float]],
) -> dict[str, float]:
    """The oracle: ``Booster.predict`` of the contract's vector for each event, by event_id.

    The vector is in the model's feature order: the event's value if present (not null), else
    the entity's stored value, else NaN.
    """
    rows = []
    for event in events:
        own, kept = event.get("features", {}), stored.get(event["entity_id"], {})
        values = [kept.get(n) if own.get(n) is None else own[n] for n in model.feature_names]
        rows.append([math.nan if v is None else float(v) for v in values])
    scores = model.booster.predict(np.array(rows, dtype=np.float64))
    return {e["event_id"]: float(s) for e, s in zip(events, scores, strict=True)}


def offline_score(
    model: LoadedModel, event: Mapping[str, Any], stored: Mapping[str, Mapping[str, float]]
) -> float:
    """The oracle for one event (see :func:`offline_scores`)."""
    return offline_scores(model, [{**event, "event_id": "_"}], stored)["_"]


def stored_features(documents: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Entity documents as the oracle's ``stored`` argument: entity_id → features."""
    return {str(d["_id"]): dict(d["features"]) for d in documents}
