"""``streamscore produce``: send synthetic events to the input topic at a given rate."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime

import numpy as np

from schemas import format_time
from settings import KafkaSettings
from streams.outputs import kafka_outputs
from streams.topics import ensure_topics, list_topics
from streamscore_cli import demo_data

BAD_RECORDS: tuple[bytes, ...] = (
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b'{"event_id": "bad-missing-entity", "features": {}}',
    b'{"event_id": "bad-object-id", "entity_id": {"$ne": null}, "features": {}}',
    b'{"event_id": "bad-nan", "entity_id": "user-000001", "features": {"amount": NaN}}',
    b"[1, 2, 3]",
)


CHUNK = 100_000
"""Events drawn at a time: memory stays flat whatever the count (a count up to this draws
exactly what one draw of all would)."""


def events(
    count: int, run_id: str, *, unknown_ratio: float, bad_ratio: float, seed: int
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs: mostly valid events, some for unknown entities, some bad."""
    rng = np.random.default_rng(seed)
    entities = demo_data.make_entities()
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        who, rows = demo_data.make_events(entities, size, rng)
        unknown = rng.random(size) < unknown_ratio
        bad = rng.random(size) < bad_ratio
        for j in range(size):
            i = start + j
            if bad[j]:
                yield None, BAD_RECORDS[i % len(BAD_RECORDS)]
                continue
            entity = f"unknown-{int(who[j]):06d}" if unknown[j] else entities.ids[int(who[j])]
            features = {
                name: (None if np.isnan(v) else float(v))
                for name, v in zip(demo_data.EVENT_FEATURES, rows[j], strict=True)
            }
            event = {
                "event_id": f"{run_id}-{i:07d}",
                "entity_id": entity,
                "event_time": format_time(datetime.now(UTC)),
                "features": features,
            }
            yield entity.encode(), json.dumps(event, separators=(",", ":")).encode()


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} events ({rate:,.0f}/s)"
    )
    sys.stderr.flush()


class TopicMissing(Exception):
    """The topic to produce to does not exist, and topics are not created automatically."""


async def produce(
    kafka: KafkaSettings,
    count: int,
    *,
    rate: float = 0.0,
    run_id: str = "demo",
    unknown_ratio: float = 0.05,
    bad_ratio: float = 0.0,
    seed: int = 11,
    topic: str | None = None,
    progress: bool = True,
) -> int:
    """Send ``count`` events (``rate`` per second, 0 = as fast as possible). Returns the count."""
    client = kafka.model_copy(update={"client_id": "streamscore-produce"})
    target = topic or kafka.input_topic
    if kafka.create_topics:  # as the scorer would: the first command run may be this one
        await ensure_topics(kafka, [target])
    elif target not in await list_topics(kafka):
        raise TopicMissing(
            f"topic {target} does not exist and STREAMSCORE_KAFKA__CREATE_TOPICS is false: "
            "create it, or start the scorer first"
        )
    started = time.monotonic()
    sent = 0
    pending: list[Awaitable[object]] = []
    try:
        async with kafka_outputs(client) as producer:
            stream = events(
                count, run_id, unknown_ratio=unknown_ratio, bad_ratio=bad_ratio, seed=seed
            )
            for key, value in stream:
                if rate > 0:
                    due = started + sent / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(await producer.send(target, value, key, None))
                sent += 1
                if len(pending) >= 1_000:
                    await asyncio.gather(*pending)
                    pending.clear()
                if progress and (sent % 500 == 0 or sent == count):
                    _progress(sent, count, started)
            await asyncio.gather(*pending)
    finally:
        if progress:
            sys.stderr.write("\n")
    return sent
