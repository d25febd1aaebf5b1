"""Per-test names (topics, group, database) and the settings that point at them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import Settings, load_settings


@dataclass(frozen=True)
class Names:
    """Topic, group and database names of one test; nothing is shared between tests."""

    suffix: str

    @property
    def input_topic(self) -> str:
        return f"events-{self.suffix}"

    @property
    def output_topic(self) -> str:
        return f"predictions-{self.suffix}"

    @property
    def dlq_topic(self) -> str:
        return f"events-dlq-{self.suffix}"

    @property
    def group_id(self) -> str:
        return f"streamscore-{self.suffix}"

    @property
    def database(self) -> str:
        return f"test_{self.suffix}"


def settings_for(
    names: Names,
    model_path: Path,
    *,
    bootstrap: str = "127.0.0.1:1",
    mongo_url: str = "mongodb://127.0.0.1:1",
    **extra: Any,
) -> Settings:
    """Settings that point at this test's own topics, group and database."""
    sections: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "input_topic": names.input_topic,
            "output_topic": names.output_topic,
            "dlq_topic": names.dlq_topic,
            "group_id": names.group_id,
            "topic_partitions": 4,
        },
        "mongo": {"url": mongo_url, "database": names.database},
        "model": {"path": model_path},
        "stream": {
            "max_batch_wait_ms": 20,
            "retry_initial_backoff_s": 0.05,
            "metrics_port": None,
        },
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    return load_settings(**sections)
