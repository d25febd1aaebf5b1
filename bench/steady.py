"""The steady-state phase: one scorer process (``streams.app.build_app``, unchanged) over at
least three entity-cache TTLs, with a skewed entity mix, window by window.

The mix: the input's events (same features) re-keyed to entities drawn from a Zipf law
(exponent ``--zipf-s``, 1.1) over the seeded entities, in a fixed random order of popularity,
plus 5 % unknown ids drawn uniformly from as many unknown ones. Both passes start from an empty
cache with the TTL ``--steady-ttl-s`` and run ``--steady-s`` (≥ 3 TTLs):

- **fixed rate**: the bench offers events at a fixed rate (``--steady-rate``, else half of the
  1-process warm drain), open loop, and reads the outputs back (end-to-end latency);
- **saturating**: the process is paused, a backlog larger than it can drain in ``--steady-s``
  at its warm rate is appended, and it is resumed: its throughput over time, compared with
  the warm drain (a fixed rate cannot show a capacity).

Per window: events scored per second, events sent per second, e2e p50/p99 of the events sent
in it, the cache hit ratio and the database wait share (the scorer's own counters, as in the
other passes: ``PipelineStats.enrich_seconds``, the cache's hits and misses), loop lag p99 and
CPU per 1,000 events. The *steady* figure of a pass is the same over the pass after its first
TTL (the cache filled once, entries expiring and refilled since).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import numpy as np

from bench.context import STEADY_KEY, RunContext
from bench.kafka_probe import Prober, Template
from bench.measure import backlog, wait_assigned
from bench.results import Quantiles, SteadyPass, SteadyResult, SteadyWindow
from bench.worker_proc import Worker, log
from streamscore_cli import demo_data

UNKNOWN_RATIO = 0.05
FALLBACK_RATE = 5_000.0
"""Offered ev/s when neither ``--steady-rate`` nor a 1-process warm drain is there."""


def zipf_templates(
    templates: list[Template], entities: int, count: int, s: float, seed: int = 23
) -> tuple[list[Template], int, float]:
    """``count`` events: the templates' features, re-keyed by a Zipf(``s``) draw over the
    first ``entities`` seeded ids (5 % unknown ids). Returns them, the distinct entities they
    touch, and the share of events that carry the 1 % hottest entities."""
    rng = np.random.default_rng(seed)
    ids = demo_data.make_entities(entities).ids
    weights = 1.0 / np.arange(1, len(ids) + 1, dtype=float) ** s
    weights /= weights.sum()
    popularity = rng.permutation(len(ids))  # rank -> entity
    ranks = rng.choice(len(ids), size=count, p=weights)
    unknown = rng.random(count) < UNKNOWN_RATIO
    unknown_ids = rng.integers(0, len(ids), size=count)
    out: list[Template] = []
    for i in range(count):
        entity = (
            f"unknown-z{int(unknown_ids[i]):06d}"
            if unknown[i]
            else ids[int(popularity[int(ranks[i])])]
        )
        doc = json.loads(templates[i % len(templates)][1])
        doc["entity_id"] = entity
        out.append((entity.encode(), json.dumps(doc, separators=(",", ":")).encode()))
    hottest = max(1, len(ids) // 100)
    known = ranks[~unknown]
    hot_share = float(np.count_nonzero(known < hottest)) / count
    return out, len({k for k, _ in out}), round(hot_share, 3)


class CpuSampler:
    """The worker's CPU seconds every 0.25 s, to split a pass into windows."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.samples.append((time.time(), self.worker.cpu()))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.samples.append((time.time(), self.worker.cpu()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def at(self, t: float) -> float | None:
        before = [c for ts, c in self.samples if ts <= t]
        return before[-1] if before else None


def window(
    worker: Worker,
    cpu: CpuSampler,
    t0: float,
    a: float,
    b: float,
    sent: list[float] | None,
    samples: list[tuple[float, float]] | None,
    resumed: bool = False,
) -> SteadyWindow:
    """The figures of ``[a, b)`` (wall times; ``t0`` the pass's start; ``resumed``: the
    process was paused until ``t0``, so the first tick after it holds the pause)."""
    delta = worker.counters_at(b).minus(worker.counters_at(a))
    seconds = max(b - a, 1e-9)
    looked_up = delta.cache_hits + delta.cache_misses
    c0, c1 = cpu.at(a), cpu.at(b)
    spent = c1 - c0 if c0 is not None and c1 is not None else None
    lags = worker.lags_between(a, b, skip_first=resumed and a <= t0)
    latencies = [ms for ts, ms in samples or [] if a <= ts < b]
    return SteadyWindow(
        t_s=round(a - t0, 1),
        seconds=round(seconds, 2),
        eps=round(delta.scored / seconds, 1),
        sent_eps=round(sum(a <= ts < b for ts in sent) / seconds, 1) if sent else None,
        latency_ms=Quantiles.of(latencies),
        cache_hit_ratio=round(delta.cache_hits / looked_up, 4) if looked_up else None,
        db_wait_share=round(delta.enrich_s / seconds, 4),
        loop_lag_p99_ms=Quantiles.of(lags).p99,
        cpu_s_per_1k=round(spent / delta.scored * 1000, 4) if spent and delta.scored else None,
    )


def windows(
    worker: Worker,
    cpu: CpuSampler,
    t0: float,
    t1: float,
    size: float,
    sent: list[float] | None = None,
    samples: list[tuple[float, float]] | None = None,
    resumed: bool = False,
) -> list[SteadyWindow]:
    count = max(1, math.floor((t1 - t0) / size + 1e-6))
    return [
        window(worker, cpu, t0, t0 + i * size, min(t0 + (i + 1) * size, t1), sent, samples, resumed)
        for i in range(count)
    ]


def log_pass(p: SteadyPass) -> None:
    s = p.steady
    if s is None:
        return
    log(
        f"  steady {p.label}: after the first TTL {s.eps:,.0f} ev/s scored, p50/p99 "
        f"{s.latency_ms.p50}/{s.latency_ms.p99} ms, hit ratio {s.cache_hit_ratio}, DB wait "
        f"{s.db_wait_share}, CPU {s.cpu_s_per_1k} s/1k"
    )


async def fixed_rate(
    ctx: RunContext, mix: list[Template], rate: float, env: dict[str, str]
) -> SteadyPass:
    config, profile = ctx.config, ctx.config.profile
    ttl, seconds = profile.steady_ttl_s, config.steady_s
    log(f"steady, fixed rate: {rate:,.0f} ev/s for {seconds:g} s, TTL {ttl:g} s, empty cache")
    group = ctx.group(STEADY_KEY, "-fixed")
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    worker = await ctx.spawn("steady-fixed", "streamscore", group, STEADY_KEY, env=env)
    cpu = CpuSampler(worker)
    prober = Prober(config.bootstrap, ctx.input, ctx.out_topic(STEADY_KEY), mix)
    try:
        await worker.wait_ready(180)
        await wait_assigned(ctx, [worker])
        await prober.start(ctx.partitions)
        cpu.start()
        prefix = f"{ctx.run_id}-steady-fixed"
        result = await prober.offer(rate, seconds, prefix, profile.settle_s)
        await asyncio.sleep(1.0)  # the last window's tick
        worker.check_alive()
    finally:
        await cpu.stop()
        await prober.stop()
        await worker.stop()
    t0, t1 = result.t_start, result.t_start + seconds
    out = SteadyPass(
        label="fixed rate",
        offered_eps=round(rate, 1),
        seconds=round(seconds, 1),
        events=result.sent,
        scored=worker.counters_at(t1 + 1).scored,
        delivered=result.delivered,
        windows=windows(
            worker, cpu, t0, t1, profile.steady_window_s, result.sent_times, result.samples
        ),
        steady=window(worker, cpu, t0, t0 + ttl, t1, result.sent_times, result.samples),
    )
    log_pass(out)
    return out


async def saturating(
    ctx: RunContext, mix: list[Template], reference_eps: float, env: dict[str, str]
) -> SteadyPass:
    config, profile = ctx.config, ctx.config.profile
    ttl, seconds = profile.steady_ttl_s, config.steady_s
    size = math.ceil(reference_eps * seconds * 1.3)
    log(f"steady, saturating: a backlog of {size:,} events for {seconds:g} s, TTL {ttl:g} s")
    group = ctx.group(STEADY_KEY, "-saturating")
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    worker = await ctx.spawn("steady-saturating", "streamscore", group, STEADY_KEY, env=env)
    cpu = CpuSampler(worker)
    try:
        _, clock = await backlog(ctx, [worker], "steady", size, mix)
        cpu.samples.append((clock.t0, clock.cpu0))
        cpu.start()
        t0 = clock.t0
        while time.time() < t0 + seconds:
            worker.check_alive()
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the last window's tick
    finally:
        await cpu.stop()
        await worker.stop()
    t1 = t0 + seconds
    # the backlog ran out before the end: only the windows before that are saturated
    dry = next(
        (tick.t for tick in worker.ticks if tick.scorer and tick.scorer.scored >= size), None
    )
    end = min(t1, dry) if dry is not None else t1
    out = SteadyPass(
        label="saturating",
        offered_eps=None,
        seconds=round(seconds, 1),
        events=size,
        scored=worker.counters_at(t1).scored,
        delivered=None,
        windows=windows(worker, cpu, t0, end, profile.steady_window_s, resumed=True),
        steady=window(worker, cpu, t0, t0 + ttl, end, None, None) if end > t0 + ttl else None,
        ran_dry=dry is not None and dry < t1,
    )
    if out.ran_dry and dry is not None:
        log(f"  steady saturating: the backlog ran out after {dry - t0:.0f} s")
    log_pass(out)
    return out


async def steady(ctx: RunContext, warm_eps: float | None) -> SteadyResult:
    """Both passes; ``warm_eps``: the 1-process warm drain (median), the reference."""
    config, profile = ctx.config, ctx.config.profile
    if config.steady_rate:
        rate, source = config.steady_rate, "--steady-rate"
    elif warm_eps:
        rate, source = 0.5 * warm_eps, "half the 1-process warm drain (median)"
    else:
        rate, source = FALLBACK_RATE, "a fixed default (no warm drain measured in this run)"
    reference = warm_eps or 2 * rate
    count = min(max(config.profile.events, 50_000), 200_000)
    mix, distinct, hot = zipf_templates(ctx.templates, config.entities, count, config.zipf_s)
    log(f"steady: Zipf({config.zipf_s}) mix of {count:,} events, {distinct:,} distinct ids")
    result = SteadyResult(
        ttl_s=profile.steady_ttl_s,
        window_s=profile.steady_window_s,
        zipf_s=config.zipf_s,
        unknown_ratio=UNKNOWN_RATIO,
        distinct_entities=distinct,
        hottest_share=hot,
        warm_reference_eps=warm_eps,
        rate_source=source,
    )
    env = {
        "STREAMSCORE_SCORING__CACHE_TTL_S": str(profile.steady_ttl_s),
        "STREAMSCORE_KAFKA__CLIENT": "aiokafka",
    }
    try:
        result.passes.append(await fixed_rate(ctx, mix, rate, env))
        result.passes.append(await saturating(ctx, mix, reference, env))
    except Exception as exc:
        log(f"steady: FAILED: {exc!r}")
        result.error = f"{type(exc).__name__}: {str(exc)[:600]}"
    return result
