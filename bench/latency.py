"""Open-loop end-to-end latency of running workers at fractions of their own max rate."""

from __future__ import annotations

import asyncio
import time

from bench.context import RunContext
from bench.kafka_probe import Prober
from bench.measure import caught_up, counters_between, cpu
from bench.results import LatencyPoint, Quantiles
from bench.worker_proc import Worker, log


async def latency(
    ctx: RunContext,
    key: str,
    workers: list[Worker],
    group: str,
    max_eps: float,
    fractions: tuple[float, ...],
    matched: dict[str, float] | None = None,
) -> list[LatencyPoint]:
    """At each fraction of ``max_eps``, and at each of ``matched``'s rates (another variant's,
    by name): send at that rate for the latency window (open loop: the schedule never waits
    for outputs), read the outputs back, match them by event id. Latency = the output's read
    time minus the event's send time (= its ``event_time``)."""
    profile = ctx.config.profile
    if not await caught_up(ctx, group, 60):
        log(f"  {group}: not caught up after 60 s; measuring latency anyway")
    prober = Prober(ctx.config.bootstrap, ctx.input, ctx.out_topic(key), ctx.templates)
    await prober.start(ctx.partitions)
    out: list[LatencyPoint] = []
    try:
        rates = [(f, max(f * max_eps, 1.0), "") for f in fractions]
        rates += [(r / max_eps, r, name) for name, r in (matched or {}).items() if r > 0]
        for fraction, rate, matches in rates:
            cpu0 = cpu(workers)
            result = await prober.offer(
                rate,
                profile.latency_window_s,
                f"{ctx.run_id}-r{ctx.repetition}-{key}-p{int(fraction * 1000)}",
                profile.settle_s,
            )
            cpu1 = cpu(workers)
            await asyncio.sleep(0.6)  # the workers' next tick carries the window's lag
            # overloaded: let the backlog go before the next rate, or it would count there
            if result.delivered < result.sent and not await caught_up(
                ctx, group, 2 * profile.settle_s
            ):
                log(f"  {group}: still behind after the window; next rate starts late")
            lags = [x for w in workers for x in w.lags_between(result.t_start, result.t_end)]
            delta = counters_between(workers, result.t_start, time.time())
            looked_up = delta.cache_hits + delta.cache_misses
            scorer = any(t.scorer is not None for w in workers for t in w.ticks[-1:])
            point = LatencyPoint(
                fraction=round(fraction, 3),
                offered_eps=round(rate, 1),
                achieved_send_eps=round(result.achieved_eps, 1),
                sent=result.sent,
                delivered=result.delivered,
                latency_ms=result.latency,
                to_output_sent_ms=result.to_output_sent,
                output_sent_to_read_ms=result.output_sent_to_read,
                loop_lag_ms=Quantiles.of(lags),
                cpu_s_per_1k=round((cpu1 - cpu0) / result.sent * 1000, 4) if result.sent else None,
                cache_hit_ratio=round(delta.cache_hits / looked_up, 4) if looked_up else None,
                enrich_s=round(delta.enrich_s, 3) if scorer else None,
                matches=matches,
            )
            out.append(point)
            log(
                f"  {key} @ {matches or f'{fraction:.0%}'} ({rate:,.0f}/s offered, "
                f"{result.achieved_eps:,.0f}/s sent): p50 {point.latency_ms.p50} "
                f"p99 {point.latency_ms.p99} ms, {result.delivered}/{result.sent} delivered"
            )
    finally:
        await prober.stop()
    return out
