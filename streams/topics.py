"""Creating the topics the scorer needs, when they are absent."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from settings import KafkaSettings, Settings
from streams.kafka_options import client_options

log = logging.getLogger(__name__)


async def _admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    """A started admin client (the caller closes it)."""
    options = client_options(kafka)
    options.pop("request_timeout_ms", None)
    admin = AIOKafkaAdminClient(
        client_id=f"{kafka.client_id}-admin", request_timeout_ms=kafka.request_timeout_ms, **options
    )
    await admin.start()
    return admin


async def ensure_topics(kafka: KafkaSettings, names: list[str] | None = None) -> list[str]:
    """Create ``names`` (default: input, output and dead-letter topics) if absent.

    Returns the names it created. Existing topics are left as they are.
    """
    wanted = names or [kafka.input_topic, kafka.output_topic, kafka.dlq_topic]
    admin = await _admin(kafka)
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(wanted) if name not in existing]
        if not missing:
            return []
        try:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=kafka.topic_partitions,
                        replication_factor=kafka.topic_replication_factor,
                    )
                    for name in missing
                ]
            )
        except TopicAlreadyExistsError:
            log.info("topics created concurrently by another process: %s", missing)
        else:
            _check_created(response)
        await _wait_for_leaders(admin, missing, kafka.request_timeout_ms / 1000)
        log.info("created topics %s with %d partitions", missing, kafka.topic_partitions)
        return missing
    finally:
        await admin.close()


class TopicsRefused(ValueError):
    """Kafka refused to create a topic (an invalid name, a replication factor the cluster
    cannot meet, no permission): a configuration error, which a restart would repeat."""


def _check_created(response: Any) -> None:
    """Raise :class:`TopicsRefused` naming each topic Kafka did not create and why (the admin
    client returns these errors instead of raising them); one created meanwhile by another
    process is no error."""
    refused = []
    for entry in getattr(response, "topic_errors", ()):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        kind = for_code(code).__name__
        refused.append(f"{name}: {kind}" + (f" ({message})" if message else ""))
    if refused:
        raise TopicsRefused("Kafka refused to create topics: " + "; ".join(refused))


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float
) -> None:
    """Wait until every partition of ``topics`` has a leader (a client that reads or writes a
    topic the moment it is created otherwise meets ``NotLeaderForPartition`` errors and logs
    them). Gives up quietly after ``timeout_s``: the clients retry on their own."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            described = await admin.describe_topics(topics)
        except KafkaError:
            described = []
        ready = len(described) == len(topics) and all(
            t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        await asyncio.sleep(0.1)


async def list_topics(kafka: KafkaSettings) -> set[str]:
    """The names of the topics the cluster has."""
    admin = await _admin(kafka)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def scorer_topics(settings: Settings) -> list[str]:
    """The topics a scorer with ``settings`` reads and writes: input, predictions, dead
    letters, and the challenger's predictions when a challenger is configured."""
    kafka = settings.kafka
    topics = [kafka.input_topic, kafka.output_topic, kafka.dlq_topic]
    if settings.challenger.path is not None:
        topics.append(settings.challenger.topic)
    return topics


RECORD_BATCH_OVERHEAD = 128
"""Bytes kept free under a topic's ``max.message.bytes``, which bounds a whole record batch
(its header is 61 bytes; a record's lengths and deltas take a few more)."""


async def record_limits(kafka: KafkaSettings, topics: list[str]) -> dict[str, int]:
    """The largest record batch each of ``topics`` takes: its ``max.message.bytes`` (the
    broker's default when the topic sets none). Topics the cluster says nothing about (absent,
    describing configs not allowed) are left out."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})
        for topic in dict.fromkeys(topics)
    ]
    try:
        admin = await _admin(kafka)
    except KafkaError as exc:
        log.info("cannot read the settings of topics %s: %r", topics, exc)
        return {}
    try:
        responses = await admin.describe_configs(resources)
    except KafkaError as exc:
        log.info("cannot read the settings of topics %s: %r", topics, exc)
        return {}
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for error, _message, _type, name, entries in response.resources:
            if error or name not in topics:
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                    limits[name] = int(entry[1])
    return limits


async def partitions_of(kafka: KafkaSettings, topics: list[str]) -> dict[str, list[int]]:
    """Partition numbers of each topic, from the cluster (empty list if the topic is absent)."""
    admin = await _admin(kafka)
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    result: dict[str, list[int]] = {topic: [] for topic in topics}
    for entry in described:
        if entry.get("error_code", 0) == 0 and entry.get("topic") in result:
            result[entry["topic"]] = sorted(p["partition"] for p in entry.get("partitions", []))
    return result


async def group_state(kafka: KafkaSettings, group_id: str) -> tuple[str, int]:
    """The consumer group's state (``Stable``, ``Empty``, ...) and its number of members."""
    admin = await _admin(kafka)
    try:
        responses = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    for response in responses:
        for group in response.groups:
            _error, name, state, _protocol_type, _protocol, members = group[:6]
            if name == group_id:
                return str(state), len(members)
    return "Dead", 0
