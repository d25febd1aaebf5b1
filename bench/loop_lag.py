"""Event-loop lag while scoring large batches: the pipeline (model in a thread executor) against
the same model called inline on the loop, measured side by side in one run.

    .venv/bin/python -m bench.loop_lag [--model models/model.txt] [--batch 5000] [--seconds 8]

Enrichment comes from an in-memory source here, so the figures isolate scoring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from schemas import InputEvent
from scoring import EntityCache, LoadedModel, ScoringPipeline, StoredFeatures, load_model
from scoring.loop_lag import LoopLagMonitor, tune_gc
from scoring.vectors import assemble
from streamscore_cli import demo_data


class InMemory:
    def __init__(self, documents: Mapping[str, StoredFeatures]) -> None:
        self.documents = documents

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        return {i: self.documents[i] for i in entity_ids if i in self.documents}

    async def ping(self) -> None:
        return None

    def use_features(self, feature_names: Sequence[str]) -> None:
        return None


def make_batch(size: int, rng: np.random.Generator) -> tuple[list[InputEvent], InMemory]:
    entities = demo_data.make_entities(2_000)
    who, rows = demo_data.make_events(entities, size, rng)
    events = [
        InputEvent(
            event_id=f"e-{i}",
            entity_id=entities.ids[int(who[i])],
            features=dict(zip(demo_data.EVENT_FEATURES, map(float, rows[i]), strict=True)),
        )
        for i in range(size)
    ]
    docs = {
        entity_id: dict(zip(demo_data.ENTITY_FEATURES, map(float, row), strict=True))
        for entity_id, row in zip(entities.ids, entities.features, strict=True)
    }
    return events, InMemory(docs)


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1000
    return {
        "samples": len(samples),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
    }


async def measure(
    name: str, model: LoadedModel, events: list[InputEvent], source: InMemory, seconds: float
) -> dict[str, object]:
    monitor = LoopLagMonitor(interval_s=0.005)
    batches = 0
    with ThreadPoolExecutor(2) as executor:
        pipeline = ScoringPipeline(model, source, executor, cache=EntityCache(10_000, 60))
        monitor.start()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            if name == "inline":
                stored = await source.fetch(list({e.entity_id for e in events}))
                lookup: dict[str, StoredFeatures | None] = dict(stored)
                matrix, _ = assemble(events, lookup, model.feature_names)
                model.predict(matrix)  # the model runs on the event loop itself
                await asyncio.sleep(0)
            else:
                await pipeline.score(events)
            batches += 1
        elapsed = time.perf_counter() - started
        await monitor.stop()
    return {
        "variant": name,
        "batch_size": len(events),
        "batches": batches,
        "events_per_s": round(batches * len(events) / elapsed),
        "loop_lag": percentiles(monitor.samples),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/model.txt"))
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--no-tune-gc",
        dest="tune_gc",
        action="store_false",
        help="leave the garbage collector as Python sets it (the product tunes it at start)",
    )
    args = parser.parse_args()
    model = load_model(args.model)
    events, source = make_batch(args.batch, np.random.default_rng(1))
    if args.tune_gc:
        tune_gc()
    results = [
        await measure("pipeline (executor)", model, events, source, args.seconds),
        await measure("inline", model, events, source, args.seconds),
    ]
    print(json.dumps(results, indent=2))
    base, ours = results[1]["loop_lag"], results[0]["loop_lag"]
    assert isinstance(base, dict)
    assert isinstance(ours, dict)
    print(
        f"event-loop lag p99 while scoring batches of {args.batch}: "
        f"pipeline {ours['p99_ms']} ms vs inline {base['p99_ms']} ms "
        f"({base['p99_ms'] / max(ours['p99_ms'], 1e-9):.0f}x lower)"
    )


if __name__ == "__main__":
    asyncio.run(main())
