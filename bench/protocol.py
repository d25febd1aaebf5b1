"""What a worker process tells the bench: one JSON line per message on its stdout.

``ready`` once it has partitions, ``tick`` every ``--tick-s`` seconds (events handled so far,
loop-lag samples since the previous tick, and the scorer's counters), ``preloaded`` when the
scorer filled its entity cache, ``stopped`` at exit.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScorerCounters:
    """The scorer's running totals, read from the product's public objects."""

    consumed: int = 0
    scored: int = 0
    commits: int = 0
    retries: int = 0
    batches: int = 0
    events: int = 0
    enrich_s: float = 0.0
    score_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_size: int = 0
    stage_s: dict[str, float] = field(default_factory=dict)
    """Seconds per stream stage (parse, score, send, ack, commit), from the stream's own
    Prometheus histogram sums."""

    def minus(self, before: ScorerCounters) -> ScorerCounters:
        stages = {k: v - before.stage_s.get(k, 0.0) for k, v in self.stage_s.items()}
        return ScorerCounters(
            consumed=self.consumed - before.consumed,
            scored=self.scored - before.scored,
            commits=self.commits - before.commits,
            retries=self.retries - before.retries,
            batches=self.batches - before.batches,
            events=self.events - before.events,
            enrich_s=self.enrich_s - before.enrich_s,
            score_s=self.score_s - before.score_s,
            cache_hits=self.cache_hits - before.cache_hits,
            cache_misses=self.cache_misses - before.cache_misses,
            cache_size=self.cache_size,
            stage_s=stages,
        )

    def plus(self, other: ScorerCounters) -> ScorerCounters:
        stages = dict(self.stage_s)
        for k, v in other.stage_s.items():
            stages[k] = stages.get(k, 0.0) + v
        return ScorerCounters(
            consumed=self.consumed + other.consumed,
            scored=self.scored + other.scored,
            commits=self.commits + other.commits,
            retries=self.retries + other.retries,
            batches=self.batches + other.batches,
            events=self.events + other.events,
            enrich_s=self.enrich_s + other.enrich_s,
            score_s=self.score_s + other.score_s,
            cache_hits=self.cache_hits + other.cache_hits,
            cache_misses=self.cache_misses + other.cache_misses,
            cache_size=self.cache_size + other.cache_size,
            stage_s=stages,
        )


@dataclass(frozen=True)
class Tick:
    t: float
    handled: int
    lag_ms: list[float]
    assigned: int
    scorer: ScorerCounters | None = None


@dataclass(frozen=True)
class Preloaded:
    t: float
    entries: int
    seconds: float


def emit(kind: str, **fields: Any) -> None:
    """Write one message (the worker side)."""
    sys.stdout.write(json.dumps({"type": kind, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


def emit_tick(
    handled: int, lag_ms: list[float], assigned: int, scorer: ScorerCounters | None
) -> None:
    emit(
        "tick",
        handled=handled,
        lag_ms=lag_ms,
        assigned=assigned,
        scorer=asdict(scorer) if scorer is not None else None,
    )


Message = Tick | Preloaded | tuple[str, float]
"""A tick, a preload report, or (kind, time) for ``ready`` / ``stopped``."""


def parse(line: bytes) -> Message | None:
    """Read one line (the bench side); None for anything that is not a message."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    kind, t = raw.get("type"), float(raw.get("t", 0.0))
    if kind == "tick":
        counters = raw.get("scorer")
        scorer = None
        if isinstance(counters, dict):
            stages = {str(k): float(v) for k, v in counters.pop("stage_s", {}).items()}
            scorer = ScorerCounters(**counters, stage_s=stages)
        return Tick(
            t=t,
            handled=int(raw["handled"]),
            lag_ms=[float(x) for x in raw["lag_ms"]],
            assigned=int(raw["assigned"]),
            scorer=scorer,
        )
    if kind == "preloaded":
        return Preloaded(t=t, entries=int(raw["entries"]), seconds=float(raw["seconds"]))
    if isinstance(kind, str):
        return (kind, t)
    return None
