"""Reading entity features from MongoDB: one ``$in`` query per batch."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bson import Decimal128
from bson import decode as decode_bson
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from schemas.numbers import finite_or_none
from scoring.errors import EnrichmentUnavailable
from scoring.metrics import ScoringMetrics

log = logging.getLogger(__name__)

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
        if isinstance(value, Decimal128):
            value = _decimal(value)
        if (number := finite_or_none(value)) is not None:
            out[str(name)] = number
    return out


def _decimal(value: Decimal128) -> float | None:
    """A stored ``NumberDecimal`` as the nearest double (what LightGBM scores with); None
    for NaN (a signalling one cannot even be converted). ±Infinity and values beyond a
    double's range become infinite and are left out like any non-finite value."""
    try:
        return float(value.to_decimal())
    except ValueError:
        return None


class EntityFeatureStore:
    """The ``entity_features`` collection, read through ``pymongo.AsyncMongoClient``.

    Timeouts come from the client (``serverSelectionTimeoutMS``, ``timeoutMS``); any driver
    error becomes :class:`EnrichmentUnavailable`.
    """

    def __init__(
        self,
        collection: AsyncCollection[Any],
        feature_names: Sequence[str],
        metrics: ScoringMetrics | None = None,
    ) -> None:
        self._collection = collection
        self._raw = collection.with_options(
            codec_options=CodecOptions(document_class=RawBSONDocument)
        )
        self._projection = _projection(feature_names)
        self.queries = 0
        self.undecodable = 0
        """Stored documents that could not be decoded (each scored as a miss)."""
        self._metrics = metrics

    def use_features(self, feature_names: Sequence[str]) -> None:
        """Project to a new model's features (after a model swap)."""
        self._projection = _projection(feature_names)

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        """Stored features of the given entities; absent entities are absent from the result.

        A document the driver cannot decode (e.g. a string that is not UTF-8) fails the whole
        reply. Then the query is read again as raw documents and decoded one by one: each
        undecodable document is left out (its entity scores as a miss), counted and logged,
        and never fails the batch.
        """
        if not entity_ids:
            return {}
        self.queries += 1
        query, projection = {"_id": {"$in": list(entity_ids)}}, self._projection
        try:
            found: dict[str, StoredFeatures] = {}
            async for doc in self._collection.find(query, projection):
                found[str(doc["_id"])] = _clean(doc.get("features"))
        except BSONError:
            return await self._fetch_one_by_one(query, projection)
        except PyMongoError as exc:
            raise EnrichmentUnavailable(f"MongoDB read failed: {exc}") from exc
        return found

    async def _fetch_one_by_one(
        self, query: dict[str, Any], projection: dict[str, int]
    ) -> dict[str, StoredFeatures]:
        found: dict[str, StoredFeatures] = {}
        bad: list[str] = []
        try:
            async for raw in self._raw.find(query, projection):
                try:
                    doc = decode_bson(raw.raw)
                except BSONError as exc:
                    bad.append(_raw_id(bytes(raw.raw)) or f"? ({exc})")
                    continue
                found[str(doc["_id"])] = _clean(doc.get("features"))
        except PyMongoError as exc:
            raise EnrichmentUnavailable(f"MongoDB read failed: {exc}") from exc
        self.undecodable += len(bad)
        if self._metrics is not None:
            self._metrics.undecodable.inc(len(bad))
        log.warning(
            "%d stored entity documents cannot be decoded; their entities score as misses: %s",
            len(bad),
            ", ".join(bad[:10]),
            extra={"event": "undecodable_document", "count": len(bad)},
        )
        return found

    async def ping(self) -> None:
        """Raise :class:`EnrichmentUnavailable` unless the server answers."""
        try:
            await self._collection.database.command("ping")
        except PyMongoError as exc:
            raise EnrichmentUnavailable(f"MongoDB ping failed: {exc}") from exc


def _raw_id(raw: bytes) -> str | None:
    """The string ``_id`` at the start of a BSON document (MongoDB writes ``_id`` first),
    read without decoding the rest; None if it is not there or not a string."""
    prefix = b"\x02_id\x00"
    if raw[4 : 4 + len(prefix)] != prefix:
        return None
    start = 4 + len(prefix) + 4
    length = int.from_bytes(raw[start - 4 : start], "little")
    return raw[start : start + max(length - 1, 0)].decode("utf-8", "backslashreplace")
