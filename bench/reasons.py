"""Cost of reason codes per 1,000 events: none, on every event, on the top 2% (alerts).

Standalone: ``python -m bench.reasons [--model models/model.txt] [--events 20000]``. Each
variant scores the same events through :class:`scoring.ScoringPipeline` (in-memory stored
features, so only vectors, the model, reasons and building predictions are timed) in batches of
500, the scorer's default; the figure is the median of ``--repeats`` passes, in milliseconds of
wall time per 1,000 events, one executor thread, LightGBM on one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas import InputEvent
from scoring import LoadedModel, ScoringPipeline, StoredFeatures, load_model
from scoring.reasons import ReasonPolicy
from streamscore_cli import demo_data
from streamscore_cli.train import train

BATCH = 500


class Stored:
    """Stored features from a dict (a :class:`scoring.FeatureSource` without I/O)."""

    def __init__(self, documents: dict[str, StoredFeatures]) -> None:
        self._documents = documents

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        return {i: self._documents[i] for i in entity_ids if i in self._documents}

    async def ping(self) -> None:
        return None

    def use_features(self, feature_names: Sequence[str]) -> None:
        return None


@dataclass(frozen=True)
class Figure:
    variant: str
    ms_per_1000: float
    explained_share: float


def make_events(count: int, seed: int) -> tuple[list[InputEvent], dict[str, StoredFeatures]]:
    rng = np.random.default_rng(seed)
    entities = demo_data.make_entities(count=20_000, seed=seed)
    names = demo_data.ENTITY_FEATURES
    documents: dict[str, StoredFeatures] = {
        entity: dict(zip(names, map(float, row), strict=True))
        for entity, row in zip(entities.ids, entities.features, strict=True)
    }
    ids = list(documents)
    events = [
        InputEvent(
            event_id=f"b-{i}",
            entity_id=ids[int(rng.integers(len(ids)))],
            features={
                "amount": float(rng.lognormal(3.5, 1.0)),
                "hour": float(rng.integers(24)),
                "is_new_device": float(rng.random() < 0.1),
                "merchant_risk": float(rng.beta(1.5, 8.0)),
                "distance_km": float(rng.lognormal(2.0, 1.2)),
            },
        )
        for i in range(count)
    ]
    return events, documents


async def measure(
    model: LoadedModel,
    events: list[InputEvent],
    documents: dict[str, StoredFeatures],
    policy: ReasonPolicy | None,
    repeats: int,
) -> tuple[float, float]:
    """(median ms per 1,000 events, share of predictions that carry reasons)."""
    with ThreadPoolExecutor(1) as executor:
        pipeline = ScoringPipeline(model, Stored(documents), executor, reasons=policy)
        passes, explained = [], 0
        for _ in range(repeats):
            explained = 0
            started = time.perf_counter()
            for at in range(0, len(events), BATCH):
                predictions = await pipeline.score(events[at : at + BATCH])
                explained += sum(1 for p in predictions if p.reasons)
            passes.append((time.perf_counter() - started) * 1000 / len(events) * 1000)
    return statistics.median(passes), explained / len(events)


async def run(model_path: Path, count: int, repeats: int, top_k: int) -> list[Figure]:
    model = load_model(model_path, threads=1)
    events, documents = make_events(count, seed=5)
    await measure(model, events[:BATCH], documents, None, 1)  # warm-up
    with ThreadPoolExecutor(1) as executor:
        scores = [
            p.score
            for at in range(0, len(events), BATCH)
            for p in await ScoringPipeline(model, Stored(documents), executor).score(
                events[at : at + BATCH]
            )
        ]
    top_2 = float(np.quantile(scores, 0.98))
    variants = [
        ("none", None),
        (f"reasons={top_k} on every event", ReasonPolicy(top_k)),
        (f"reasons={top_k} on the top 2% (min score {top_2:.4f})", ReasonPolicy(top_k, top_2)),
    ]
    figures = []
    for name, policy in variants:
        ms, share = await measure(model, events, documents, policy, repeats)
        figures.append(Figure(name, ms, share))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.txt"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reasons", type=int, default=3)
    args = parser.parse_args()
    if not args.model.is_file():
        train(args.model)
    figures = asyncio.run(run(args.model, args.events, args.repeats, args.reasons))
    model = load_model(args.model)
    print(
        f"model {model.name}:{model.version}, {model.booster.num_trees()} trees, "
        f"{len(model.feature_names)} features; {args.events:,} events in batches of {BATCH}, "
        f"median of {args.repeats} passes"
    )
    base = figures[0].ms_per_1000
    print(f"{'variant':<48} {'ms / 1,000 events':>18} {'vs none':>9} {'explained':>10}")
    for f in figures:
        print(
            f"{f.variant:<48} {f.ms_per_1000:>18.2f} {f.ms_per_1000 / base:>8.2f}x "
            f"{f.explained_share:>9.1%}"
        )


if __name__ == "__main__":
    main()
