"""Helpers shared by the tests: a small trained model and an in-memory feature source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from scoring import EnrichmentUnavailable, StoredFeatures
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
