"""Enrichment and model execution behind one async call: :class:`ScoringPipeline`."""

from scoring.cache import EntityCache
from scoring.errors import EnrichmentUnavailable, ModelLoadError, ScoringTimeout
from scoring.feature_store import EntityFeatureStore, FeatureSource, StoredFeatures
from scoring.model import LoadedModel, load_model
from scoring.pipeline import PipelineStats, ScoringPipeline

__all__ = [
    "EnrichmentUnavailable",
    "EntityCache",
    "EntityFeatureStore",
    "FeatureSource",
    "LoadedModel",
    "ModelLoadError",
    "PipelineStats",
    "ScoringPipeline",
    "ScoringTimeout",
    "StoredFeatures",
    "load_model",
]
