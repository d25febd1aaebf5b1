"""Fixtures: real Kafka and MongoDB endpoints, per-test names, a trained model.

Endpoints are taken, in this order, from
1. ``STREAMSCORE_TEST_KAFKA_BOOTSTRAP`` / ``STREAMSCORE_TEST_MONGO_URL`` if set;
2. testcontainers' Kafka and MongoDB containers if a Docker engine answers;
3. the project's local servers (``infra/local-servers.sh``), started if not running; the local
   MongoDB-compatible server is the one ``STREAMSCORE_LOCAL_MONGO`` names (``mongo-java-server``
   by default, or ``ferretdb``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from scoring import LoadedModel, load_model
from tests.support.helpers import train_small_model
from tests.support.names import Names

ROOT = Path(__file__).resolve().parents[2]


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


KAFKA_CLIENTS = ("aiokafka", "confluent")


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The scorer's Kafka client (``STREAMSCORE_KAFKA__CLIENT``): a test that asks for it runs
    once per client."""
    return str(request.param)


@pytest.fixture
def names() -> Names:
    return Names(uuid.uuid4().hex[:12])


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("model") / "model.txt")


@pytest.fixture(scope="session")
def model(model_path: Path) -> LoadedModel:
    return load_model(model_path)


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
