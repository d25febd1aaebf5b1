"""Test session set-up: the fixtures live in ``tests/support/`` (registered below), helpers are
imported from ``tests.support.*``; this file holds only pytest hooks.

Fixtures: real Kafka and MongoDB endpoints, per-test names, a trained model.

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

import pytest

pytest_plugins = ["tests.support.fixtures", "tests.support.private_servers"]

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
