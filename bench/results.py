"""The figures of one run, typed end to end, and their JSON form."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Quantiles:
    """Nearest-rank percentiles of a sample (None when it is empty)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles:
        if not values:
            return cls()
        ordered = sorted(values)

        def rank(q: float) -> float:
            return round(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1], 3)

        return cls(p50=rank(50), p95=rank(95), p99=rank(99), max=round(ordered[-1], 3))


@dataclass(frozen=True)
class Spread:
    """One figure over the run's repetitions: the median, and the smallest and largest."""

    median: float
    min: float
    max: float
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float | None], digits: int = 4) -> Spread | None:
        got = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not got:
            return None
        return cls(
            median=round(statistics.median(got), digits),
            min=round(min(got), digits),
            max=round(max(got), digits),
            values=[round(v, digits) for v in got],
        )


@dataclass(frozen=True)
class ScorerShare:
    """Where a scorer pass's wall time went (per process; shares of wall seconds)."""

    db_wait_share: float
    """Seconds awaiting enrichment (cache + MongoDB) ÷ wall seconds."""
    model_share: float
    enrich_s: float
    score_s: float
    mean_batch: float | None
    cache_hit_ratio: float | None
    stage_share: dict[str, float]
    """parse, score, send, ack, commit: the stream's own stage timers ÷ wall seconds."""


@dataclass
class PassResult:
    """One throughput measurement of one variant."""

    label: str
    """``drain`` (relay), ``cold``/``warm`` (scorer), or ``N s window``."""
    events: int
    seconds: float
    eps: float
    complete: bool
    cpu_s: float
    cpu_s_per_1k: float | None
    loop_lag_ms: Quantiles
    scorer: ScorerShare | None = None
    preload_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LatencyPoint:
    """Open-loop end-to-end latency at one offered rate."""

    fraction: float
    offered_eps: float
    achieved_send_eps: float
    sent: int
    delivered: int
    latency_ms: Quantiles
    to_output_sent_ms: Quantiles
    """Event sent → the output record's Kafka timestamp (batching, parsing, scoring)."""
    output_sent_to_read_ms: Quantiles
    loop_lag_ms: Quantiles
    cpu_s_per_1k: float | None
    cache_hit_ratio: float | None = None
    enrich_s: float | None = None
    matches: str = ""
    """Set when the rate is another variant's (``streamscore_1p@50%``), not a fraction of this
    variant's own max; ``fraction`` is then that rate over this variant's max."""


@dataclass
class VariantResult:
    key: str
    processes: int
    passes: list[PassResult] = field(default_factory=list)
    latency: list[LatencyPoint] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    error: str = ""
    """Why the variant could not be measured (its passes are then empty)."""

    def best(self, label: str | None = None) -> PassResult | None:
        done = [p for p in self.passes if p.complete and (label is None or p.label == label)]
        return max(done, key=lambda p: p.eps) if done else None

    def at(self, fraction: float) -> LatencyPoint | None:
        return next((x for x in self.latency if x.fraction == fraction and not x.matches), None)

    def matching(self, matches: str) -> LatencyPoint | None:
        return next((x for x in self.latency if x.matches == matches), None)


Variants = dict[str, VariantResult]
"""One repetition: every variant measured in it, by key."""


@dataclass(frozen=True)
class SteadyWindow:
    """One window of a steady-state pass (figures of that window only)."""

    t_s: float
    """Start of the window, seconds from the start of the pass."""
    seconds: float
    eps: float
    """Events scored per second (the scorer's own counter)."""
    sent_eps: float | None
    """Events the bench sent per second (fixed-rate pass)."""
    latency_ms: Quantiles
    """End to end, of the events sent in the window (fixed-rate pass)."""
    cache_hit_ratio: float | None
    db_wait_share: float | None
    loop_lag_p99_ms: float | None
    cpu_s_per_1k: float | None


@dataclass
class SteadyPass:
    label: str
    """``fixed rate`` (open loop) or ``saturating`` (drains a backlog larger than it can)."""
    offered_eps: float | None
    seconds: float
    events: int
    """Events sent (fixed rate) or appended as the backlog (saturating)."""
    scored: int
    delivered: int | None
    windows: list[SteadyWindow] = field(default_factory=list)
    steady: SteadyWindow | None = None
    """The pass after its first TTL (the cache filled once), as one window."""
    ran_dry: bool = False
    """The saturating pass drained its backlog before the end (then it is not saturating)."""


@dataclass
class SteadyResult:
    ttl_s: float
    window_s: float
    zipf_s: float
    unknown_ratio: float
    distinct_entities: int
    hottest_share: float
    """Share of the events that carry the 1 % hottest entities."""
    warm_reference_eps: float | None
    """The 1-process warm drain it is compared with (median over the repetitions)."""
    rate_source: str
    passes: list[SteadyPass] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class HttpLevel:
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    statuses: dict[str, int]
    rps: float
    latency_ms: Quantiles
    server_cpu_s_per_1k: float | None = None
    loop_lag_p99_ms: float | None = None


@dataclass
class SidecarServer:
    levels: list[HttpLevel]
    peak_rss_mb: float

    def at(self, concurrency: int) -> HttpLevel | None:
        return next((x for x in self.levels if x.concurrency == concurrency), None)


@dataclass
class SidecarResult:
    warmup_s: float
    distinct_bodies: int
    distinct_entities: int
    cache_warmup_s: float = 0.0
    servers: dict[str, SidecarServer] = field(default_factory=dict)


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap: str
    kafka_version: str
    mongo_hosts: str
    mongo_server: str
    """What answered: ``mongo-java-server 1.47.0``, ``FerretDB v1.24.2`` or ``MongoDB x.y``."""
    mongo_version: str
    lookup_ms: dict[str, float]


@dataclass(frozen=True)
class Machine:
    nproc: int
    cpu_model: str
    mem_total_mb: int
    python: str
    loadavg_at_start: tuple[float, float, float]
    loadavg_at_end: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Target:
    target: str
    measured: str
    met: bool | None
    source: str
    """Where the target comes from (an issue, or the original design)."""


@dataclass
class RunResult:
    run_id: str
    started_at: str
    params: dict[str, Any]
    machine: Machine
    servers: Servers
    repetitions: list[Variants] = field(default_factory=list)
    """The stream variants, once per repetition (``--runs``), in the order they ran."""
    medians: dict[str, dict[str, Spread]] = field(default_factory=dict)
    """Per variant: each headline figure over the repetitions (``warm.eps``, ...)."""
    ratios_by_run: list[dict[str, float | None]] = field(default_factory=list)
    ratios: dict[str, Spread] = field(default_factory=dict)
    """Ratios taken within each repetition, then their median and range."""
    steady: SteadyResult | None = None
    sidecar: SidecarResult | None = None
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    product_sha256: str = ""
    product_changed_during_run: list[str] = field(default_factory=list)
    log_dir: str = ""
    plot: bool = False
    steady_plot: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str) + "\n"


def percentiles(
    values: Sequence[float], qs: Sequence[float] = (50, 95, 99)
) -> dict[str, float | None]:
    """Nearest-rank percentiles by name (``p50`` …), for the free-form abuse benchmark."""
    if not values:
        return {f"p{q:g}": None for q in qs}
    ordered = sorted(values)
    return {f"p{q:g}": round(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1], 3) for q in qs}
