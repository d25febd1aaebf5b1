"""Errors the scoring pipeline raises to its adapters."""


class EnrichmentUnavailable(RuntimeError):
    """MongoDB could not be read (timeout, outage, auth). Retry later; never dead-letter."""


class ScoringTimeout(RuntimeError):
    """The model did not return within ``STREAMSCORE_SCORING__SCORE_TIMEOUT_S``."""


class ModelLoadError(RuntimeError):
    """A model file or its metadata is missing, unreadable or inconsistent."""
