"""Steady-state hit ratio of the entity cache, with and without refresh-ahead.

A simulated clock drives the real :class:`scoring.cache.EntityCache`: 2,000 events/s in batches
of 500, 20,000 entities, TTL 60 s, 10 simulated minutes; the hit ratio is measured over the last
5 minutes (steady state), for a skewed (Zipf, s=1.1) and a uniform entity mix. The loader
answers at once, so the figures are the cache's policy, not a database's speed.

Usage: ``python -m bench.cache_refresh``
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from scoring.cache import EntityCache
from scoring.feature_store import StoredFeatures

ENTITIES, RATE, BATCH, TTL_S, DURATION_S = 20_000, 2_000, 500, 60.0, 600.0


@dataclass(frozen=True)
class Row:
    mix: str
    refresh_ahead: float
    hit_ratio: float
    queries_per_min: float


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def simulate(mix: str, refresh_ahead: float, seed: int = 7) -> Row:
    rng = random.Random(seed)
    clock = Clock()
    cache = EntityCache(ENTITIES, TTL_S, clock=clock, refresh_ahead=refresh_ahead)
    queries = 0

    async def load(ids: Sequence[str]) -> dict[str, StoredFeatures]:
        nonlocal queries
        queries += 1
        return {i: {"x": 1.0} for i in ids}

    weights = [1 / (k + 1) ** 1.1 for k in range(ENTITIES)] if mix == "zipf" else None
    cumulative = list(accumulate(weights)) if weights else None
    ids = [f"user-{k}" for k in range(ENTITIES)]
    steps = int(DURATION_S * RATE / BATCH)
    hits_at_half = misses_at_half = queries_at_half = 0
    for step in range(steps):
        clock.now = step * BATCH / RATE
        if step == steps // 2:
            hits_at_half, misses_at_half = cache.stats.hits, cache.stats.misses
            queries_at_half = queries
        batch = (
            rng.choices(ids, cum_weights=cumulative, k=BATCH)
            if cumulative
            else rng.choices(ids, k=BATCH)
        )
        await cache.get_many(batch, load)
        await asyncio.sleep(0)  # lets background refreshes run
    hits = cache.stats.hits - hits_at_half
    misses = cache.stats.misses - misses_at_half
    minutes = DURATION_S / 2 / 60
    return Row(mix, refresh_ahead, hits / (hits + misses), (queries - queries_at_half) / minutes)


async def run() -> list[Row]:
    return [await simulate(mix, ra) for mix in ("zipf", "uniform") for ra in (1.0, 0.8)]


def main() -> None:
    print(f"{'mix':<9}{'refresh-ahead':>14}{'hit ratio':>11}{'queries/min':>13}")
    for row in asyncio.run(run()):
        label = "off" if row.refresh_ahead >= 1 else f"at {row.refresh_ahead:.0%} of TTL"
        print(f"{row.mix:<9}{label:>14}{row.hit_ratio:>11.2%}{row.queries_per_min:>13.0f}")


if __name__ == "__main__":
    main()
