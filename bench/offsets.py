"""Kafka offsets the bench reads and writes: topic ends, group commits, clean-up."""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from settings import KafkaSettings
from streams.topics import partitions_of

Positions = dict[int, int]
"""partition -> offset, of the one input topic."""


class Offsets:
    """End offsets of topics and committed offsets of groups (one admin client)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        bootstrap = kafka.bootstrap_servers
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="bench-offsets"
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._consumer.stop()
        with contextlib.suppress(Exception):
            await self._admin.close()

    async def end_offsets(self, topic: str) -> Positions:
        known = await partitions_of(self.kafka, [topic])
        tps = [TopicPartition(topic, p) for p in known[topic]]
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: int(off) for tp, off in ends.items()}

    async def committed(self, group: str, topic: str) -> Positions:
        raw = await self._admin.list_consumer_group_offsets(group)
        return {tp.partition: int(meta.offset) for tp, meta in raw.items() if tp.topic == topic}

    async def precommit(self, group: str, topic: str, offsets: Positions) -> None:
        """Store ``offsets`` for ``group`` so that a new member starts right there."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            client_id="bench-precommit",
        )
        await consumer.start()
        try:
            tps = {TopicPartition(topic, p): off for p, off in offsets.items()}
            consumer.assign(list(tps))
            await consumer.commit(tps)
        finally:
            await consumer.stop()

    async def groups_with_prefix(self, prefix: str) -> list[str]:
        groups = await self._admin.list_consumer_groups()
        return [str(g[0]) for g in groups if str(g[0]).startswith(prefix)]

    async def delete_groups(self, groups: list[str]) -> int:
        """Delete consumer groups (aiokafka's admin client has no public call for it: a
        DeleteGroups request to each group's coordinator). Returns how many were deleted."""
        from aiokafka.protocol.admin import DeleteGroupsRequest

        deleted = 0
        for group in groups:
            with contextlib.suppress(Exception):
                node = await self._admin.find_coordinator(group)
                response = await self._admin._send_request(DeleteGroupsRequest([group]), node)
                deleted += sum(1 for _, error in response.results if error == 0)
        return deleted

    async def delete_topics(self, topics: list[str]) -> list[str]:
        existing = set(await self._admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await self._admin.delete_topics(doomed)
        return doomed


def total(offsets: Positions) -> int:
    return sum(offsets.values())


def progress(committed: Positions, base: Positions, target: Positions) -> int:
    """Records committed past ``base``, counting each partition up to ``target`` at most."""
    return sum(max(0, min(committed.get(p, 0), target[p]) - base.get(p, 0)) for p in target)
