"""per-message, cached: the idiomatic FastStream handler a user would write.

One message per handler call; an LRU entity cache with the product's size and TTL
(``STREAMSCORE_SCORING__CACHE_MAX_ENTRIES`` / ``CACHE_TTL_S``), absent entities cached too;
``find_one`` by ``_id`` on a miss; the one-row predict in ``asyncio.to_thread``; the prediction
published with ``acks="all"`` and awaited (``broker.publish`` resolves when Kafka acknowledged
it); FastStream commits the offset after the handler returns (``AckPolicy.ACK``).

``--preload-ids`` fills the cache before consuming (with ``$in`` queries), as for the scorer's
warm pass, so the two are compared on the same footing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from bench.protocol import emit
from bench.variants.naive import subscriber_assignment
from bench.variants.one_row import OneRowModel, stored_features
from bench.variants.reporter import Reporter, until_signal
from schemas import InputEvent
from settings import Settings

Entry = dict[str, float | None] | None


class LruCache:
    """Least-recently-used entries, each served for ``ttl_s`` seconds after it was read."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries: OrderedDict[str, tuple[float, Entry]] = OrderedDict()
        self._max, self._ttl = max_entries, ttl_s

    def get(self, key: str) -> tuple[bool, Entry]:
        hit = self._entries.get(key)
        if hit is None or time.monotonic() - hit[0] > self._ttl:
            return False, None
        self._entries.move_to_end(key)
        return True, hit[1]

    def put(self, key: str, value: Entry) -> None:
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


async def run_cached(settings: Settings, rep: Reporter, preload_ids: list[str]) -> None:
    kafka, mongo = settings.kafka, settings.mongo
    model = OneRowModel(settings.model.path)
    cache = LruCache(settings.scoring.cache_max_entries, settings.scoring.cache_ttl_s)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url.get_secret_value())
    collection = client[mongo.database][mongo.collection]
    broker = KafkaBroker(kafka.bootstrap_servers, acks="all", log_level=logging.DEBUG)

    @broker.subscriber(
        kafka.input_topic,
        group_id=kafka.group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )
    async def handle(event: InputEvent) -> None:
        found, stored = cache.get(event.entity_id)
        if not found:
            stored = stored_features(await collection.find_one({"_id": event.entity_id}))
            cache.put(event.entity_id, stored)
        score = await asyncio.to_thread(model.predict, model.row(event, stored))
        prediction = model.prediction(event, score, stored is not None)
        await broker.publish(prediction, kafka.output_topic, key=event.entity_id.encode())
        rep.count += 1

    if preload_ids:
        started = time.monotonic()
        ids = preload_ids
        for i in range(0, len(ids), 1_000):
            chunk = ids[i : i + 1_000]
            docs = {d["_id"]: d async for d in collection.find({"_id": {"$in": chunk}})}
            for entity_id in chunk:
                cache.put(entity_id, stored_features(docs.get(entity_id)))
        emit("preloaded", entries=len(cache), seconds=round(time.monotonic() - started, 2))
    await broker.start()
    rep.assigned = lambda: subscriber_assignment(broker)
    try:
        await until_signal()
    finally:
        await broker.stop()
        await client.close()
