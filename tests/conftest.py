"""Fixtures: real Kafka and MongoDB endpoints, per-test names, a trained model.

Endpoints are taken, in this order, from
1. ``STREAMSCORE_TEST_KAFKA_BOOTSTRAP`` / ``STREAMSCORE_TEST_MONGO_URL`` if set;
2. testcontainers' Kafka and MongoDB containers if a Docker engine answers;
3. the project's local servers (``infra/local-servers.sh``), started if not running; the local
   MongoDB-compatible server is the one ``STREAMSCORE_LOCAL_MONGO`` names (``mongo-java-server``
   by default, or ``ferretdb``).

Every test that reaches MongoDB (through ``mongo_url`` or ``private_mongo``) is marked ``mongo``,
so one command reruns exactly those against another server, as ``.ci/run`` does on FerretDB::

    STREAMSCORE_LOCAL_MONGO=ferretdb STREAMSCORE_TEST_MONGO_URL=mongodb://127.0.0.1:27018 \\
        pytest -m "integration and mongo"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from scoring import LoadedModel, load_model
from settings import Settings, load_settings
from tests.support import train_small_model

ROOT = Path(__file__).resolve().parent.parent


MONGO_FIXTURES = frozenset({"mongo_url", "private_mongo"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mongo: reaches a MongoDB server (set on every test using mongo_url/private_mongo)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MONGO_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mongo)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _local_server(which: str) -> None:
    subprocess.run([str(ROOT / "infra" / "local-servers.sh"), "up", which], check=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka broker's bootstrap address."""
    if env := os.environ.get("STREAMSCORE_TEST_KAFKA_BOOTSTRAP"):
        yield env
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        _local_server("kafka")
        yield f"127.0.0.1:{os.environ.get('STREAMSCORE_KAFKA_PORT', '9092')}"


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A real MongoDB (or MongoDB-compatible) server's URL (see the module docstring)."""
    if env := os.environ.get("STREAMSCORE_TEST_MONGO_URL"):
        yield env
    elif _docker_answers():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:8.0.17") as container:
            yield container.get_connection_url()
    else:
        _local_server("mongo")
        yield f"mongodb://127.0.0.1:{os.environ.get('STREAMSCORE_MONGO_PORT', '27017')}"


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


@pytest.fixture
def names() -> Names:
    return Names(uuid.uuid4().hex[:12])


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("model") / "model.txt")


@pytest.fixture(scope="session")
def model(model_path: Path) -> LoadedModel:
    return load_model(model_path)


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


@pytest.fixture
async def mongo_db(mongo_url: str, names: Names) -> AsyncIterator[Any]:
    """This test's own database on the real server, dropped afterwards."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=5_000
    )
    try:
        yield client[names.database]
    finally:
        await client.drop_database(names.database)
        await client.close()


# Private servers for tests that stop, start or restart one (see tests/private_servers.py).
from tests.private_servers import private_kafka, private_mongo  # noqa: E402, F401
