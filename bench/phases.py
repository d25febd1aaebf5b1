"""The stream phases: relays, the per-event baselines, and the scorers (cold, warm, latency)."""

from __future__ import annotations

import asyncio
import time

from bench.config import Spec
from bench.context import RunContext
from bench.latency import latency
from bench.measure import backlog, drain, window
from bench.results import VariantResult
from bench.worker_proc import Worker, log


def peak_rss_mb(workers: list[Worker]) -> float:
    for w in workers:
        w.sample_memory()
    return round(max(w.peak_rss_kb for w in workers) / 1024, 1)


async def stop(*workers: Worker) -> None:
    await asyncio.gather(*(w.stop() for w in workers))


async def relay(
    ctx: RunContext, key: str, spec: Spec, matched: dict[str, float] | None = None
) -> VariantResult:
    """``spec.processes`` relays in one group drain a copy of the input from a backlog; then
    latency at fractions of that rate (2 processes: 50 % only), and at ``matched``'s rates
    (other variants' 50 %, for a comparison at the same offered rate)."""
    processes = spec.processes
    log(f"{key}: {processes} process(es) drain a copy of the input")
    group = ctx.group(key)
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    workers = [await ctx.spawn(f"{key}-{i}", spec.worker, group, key) for i in range(processes)]
    profile = ctx.config.profile
    copy, clock = await backlog(ctx, workers, "relay", profile.events)
    result = VariantResult(key, processes)
    result.passes.append(
        await drain(ctx, workers, group, copy, "drain", clock, profile.drain_timeout_s)
    )
    fractions = profile.fractions if processes == 1 else (0.5,)
    result.latency = await latency(
        ctx, key, workers, group, result.passes[0].eps, fractions, matched
    )
    result.peak_rss_mb = peak_rss_mb(workers)
    await stop(*workers)
    return result


async def baseline(ctx: RunContext, key: str) -> VariantResult:
    """A per-event baseline (``naive``, ``naive_executor``, ``cached``): events/s over a window
    from the start of the input; then latency, from its end, in a fresh process."""
    profile = ctx.config.profile
    preload = ["--preload-ids", str(ctx.preload_file)] if key == "cached" else []
    log(f"{key}: {profile.window_s:g} s window")
    w = await ctx.spawn(key, key, ctx.group(key), key, preload)
    await w.wait_ready(120)
    result = VariantResult(key, 1)
    result.passes.append(await window(ctx, w, ctx.group(key), profile.window_s))
    result.peak_rss_mb = peak_rss_mb([w])
    await stop(w)

    group = ctx.group(key, "-lat")
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    log(f"{key}: latency from the end of the input (group {group})")
    w = await ctx.spawn(f"{key}-lat", key, group, key, preload)
    await w.wait_ready(120)
    result.latency = await latency(ctx, key, [w], group, result.passes[0].eps, profile.fractions)
    result.peak_rss_mb = max(result.peak_rss_mb, peak_rss_mb([w]))
    await stop(w)
    return result


async def scorer(ctx: RunContext, key: str, spec: Spec) -> VariantResult:
    """Cold, then warm, then latency, of ``spec.processes`` scorer processes in one group, on
    the Kafka client ``spec.client`` (``STREAMSCORE_KAFKA__CLIENT``, set by the context).

    Each pass starts fresh process(es) at the end of the input, waits until every partition
    is assigned, pauses them, appends a copy of the input and resumes them: the clock runs
    from a backlog. Cold: empty entity cache; drains the copy (bounded by ``cold_limit_s``).
    Warm: the entity cache holds every entity of the input before consuming; drains it."""
    profile, config = ctx.config.profile, ctx.config
    processes = spec.processes
    result = VariantResult(key, processes)

    log(
        f"{key}: {spec.client} client; cold (fresh process, empty cache), drain a copy of the input"
    )
    group = ctx.group(key, "-cold")
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    workers = [
        await ctx.spawn(f"{key}-cold-{i}", "streamscore", group, key) for i in range(processes)
    ]
    copy, clock = await backlog(ctx, workers, "cold", profile.events)
    result.passes.append(
        await drain(ctx, workers, group, copy, "cold", clock, profile.cold_limit_s)
    )
    rss = peak_rss_mb(workers)
    await stop(*workers)

    log(f"{key}: warm (every entity of the input cached), drain a copy of the input")
    group = ctx.group(key, "-warm")
    await ctx.offsets.precommit(group, ctx.input, await ctx.offsets.end_offsets(ctx.input))
    extra = ["--preload-ids", str(ctx.preload_file)]
    if config.profile_path and processes == 1:
        extra += ["--profile", config.profile_path]
    workers = [
        await ctx.spawn(f"{key}-warm-{i}", "streamscore", group, key, extra)
        for i in range(processes)
    ]
    copy, clock = await backlog(ctx, workers, "warm", profile.events)
    warm = await drain(ctx, workers, group, copy, "warm", clock, profile.drain_timeout_s)
    warm.preload_s = [w.preloaded[0].seconds for w in workers if w.preloaded]
    result.passes.append(warm)

    fractions = profile.fractions if processes == 1 else (0.5,)
    # the latency windows must end before the preloaded entries reach their TTL
    ttl = config.cache_ttl_s or config.settings.scoring.cache_ttl_s
    loaded_at = min(w.preloaded[-1].t for w in workers if w.preloaded)
    needed = len(fractions) * (profile.latency_window_s + 2) + 5
    if time.time() - loaded_at + needed > 0.8 * ttl:
        reloads = await asyncio.gather(*(w.preload() for w in workers))
        log(f"  entity cache reloaded for the latency windows: {[r.seconds for r in reloads]} s")
    result.latency = await latency(ctx, key, workers, group, warm.eps, fractions)
    result.peak_rss_mb = max(rss, peak_rss_mb(workers))
    await stop(*workers)
    return result
