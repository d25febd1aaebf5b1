"""What the per-event baselines share: the model, one row at a time, and the prediction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np

from schemas import Enrichment, InputEvent, ModelRef, Prediction

StoredFeatures = Mapping[str, float | None]


class OneRowModel:
    """A LightGBM model scored one row per call, as a per-event handler does."""

    def __init__(self, path: Path) -> None:
        self.booster = lgb.Booster(model_file=str(path))
        self.names = [str(n) for n in self.booster.feature_name()]
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        self.ref = ModelRef(name=str(meta["name"]), version=str(meta["version"]))

    def row(self, event: InputEvent, stored: StoredFeatures | None) -> list[float]:
        """The event's value, else the entity's stored one, else NaN (the product's rule)."""
        out: list[float] = []
        for name in self.names:
            value = event.features.get(name)
            if value is None and stored is not None:
                value = stored.get(name)
            out.append(float("nan") if value is None else float(value))
        return out

    def predict(self, row: list[float]) -> float:
        # num_threads=1 as the product uses: LightGBM's default (all cores) costs ~2.5 ms per
        # one-row call on our 2-core machines, which would make a baseline look worse than it is.
        return float(self.booster.predict(np.array([row], dtype=np.float64), num_threads=1)[0])

    def prediction(self, event: InputEvent, score: float, found: bool) -> Prediction:
        now = datetime.now(UTC)
        return Prediction(
            event_id=event.event_id,
            entity_id=event.entity_id,
            score=score,
            model=self.ref,
            enrichment=Enrichment.HIT if found else Enrichment.MISS,
            event_time=event.event_time or now,
            scored_at=now,
        )


def stored_features(doc: Mapping[str, object] | None) -> dict[str, float | None] | None:
    """The ``features`` of an entity document (None when there is no document)."""
    if doc is None:
        return None
    raw = doc.get("features")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): float(v) if isinstance(v, int | float) else None for k, v in raw.items()}
