"""Reading entity features from MongoDB: one ``$in`` query per batch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from scoring.errors import EnrichmentUnavailable

StoredFeatures = Mapping[str, float]
"""An entity's stored features: name -> finite float. Absent or unusable values are left out."""


class FeatureSource(Protocol):
    """Where stored entity features come from (MongoDB in production)."""

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]: ...

    async def ping(self) -> None: ...

    def use_features(self, feature_names: Sequence[str]) -> None: ...


def _projection(feature_names: Sequence[str]) -> dict[str, int]:
    if any("." in n or n.startswith("$") or not n for n in feature_names):
        return {"features": 1}
    return {f"features.{n}": 1 for n in feature_names} or {"features": 1}


def _clean(raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:
            continue
        if math.isfinite(number):
            out[str(name)] = number
    return out


class EntityFeatureStore:
    """The ``entity_features`` collection, read through ``pymongo.AsyncMongoClient``.

    Timeouts come from the client (``serverSelectionTimeoutMS``, ``timeoutMS``); any driver
    error becomes :class:`EnrichmentUnavailable`.
    """

    def __init__(self, collection: AsyncCollection[Any], feature_names: Sequence[str]) -> None:
        self._collection = collection
        self._projection = _projection(feature_names)
        self.queries = 0

    def use_features(self, feature_names: Sequence[str]) -> None:
        """Project to a new model's features (after a model swap)."""
        self._projection = _projection(feature_names)

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        """Stored features of the given entities; absent entities are absent from the result."""
        if not entity_ids:
            return {}
        self.queries += 1
        try:
            cursor = self._collection.find({"_id": {"$in": list(entity_ids)}}, self._projection)
            found: dict[str, StoredFeatures] = {}
            async for doc in cursor:
                found[str(doc["_id"])] = _clean(doc.get("features"))
        except PyMongoError as exc:
            raise EnrichmentUnavailable(f"MongoDB read failed: {exc}") from exc
        return found

    async def ping(self) -> None:
        """Raise :class:`EnrichmentUnavailable` unless the server answers."""
        try:
            await self._collection.database.command("ping")
        except PyMongoError as exc:
            raise EnrichmentUnavailable(f"MongoDB ping failed: {exc}") from exc
