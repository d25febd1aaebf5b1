"""One typed settings tree for every streamscore process (prefix ``STREAMSCORE_``)."""

from settings.model import (
    ApiSettings,
    ChallengerSettings,
    KafkaSettings,
    ModelSettings,
    MongoSettings,
    ScoringSettings,
    Settings,
    StreamSettings,
    describe_errors,
    load_settings,
)

__all__ = [
    "ApiSettings",
    "ChallengerSettings",
    "KafkaSettings",
    "ModelSettings",
    "MongoSettings",
    "ScoringSettings",
    "Settings",
    "StreamSettings",
    "describe_errors",
    "load_settings",
]
