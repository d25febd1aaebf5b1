"""The entity features document (MongoDB ``streamscore.entity_features``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import FeatureValue, Identifier


class EntityFeatures(BaseModel):
    """``{"_id": entity_id, "features": {...}, "updated_at": ...}``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    entity_id: Identifier = Field(alias="_id")
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    updated_at: datetime | None = None
