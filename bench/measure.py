"""How a pass is measured: drained from a backlog, or counted over a window; and what a pass
result holds (events/s, CPU, loop lag, and for the scorer where its wall time went)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.context import RunContext
from bench.kafka_probe import Template
from bench.offsets import Positions, progress, total
from bench.protocol import ScorerCounters
from bench.results import PassResult, Quantiles, ScorerShare
from bench.worker_proc import Worker, log


@dataclass(frozen=True)
class Clock:
    """Where a pass starts: wall time and the processes' CPU seconds then."""

    t0: float
    cpu0: float


def cpu(workers: list[Worker]) -> float:
    return sum(w.cpu() for w in workers)


def counters_between(workers: list[Worker], t0: float, t1: float) -> ScorerCounters:
    out = ScorerCounters()
    for w in workers:
        out = out.plus(w.counters_at(t1).minus(w.counters_at(t0)))
    return out


def scorer_share(delta: ScorerCounters, wall: float) -> ScorerShare:
    """Shares of the processes' wall time (``wall`` = seconds x processes). With pipelined
    batches one batch's acks and commit overlap the next one's work: shares can add to > 1."""
    looked_up = delta.cache_hits + delta.cache_misses
    return ScorerShare(
        db_wait_share=round(delta.enrich_s / wall, 3),
        model_share=round(delta.score_s / wall, 3),
        enrich_s=round(delta.enrich_s, 2),
        score_s=round(delta.score_s, 2),
        mean_batch=round(delta.events / delta.batches, 1) if delta.batches else None,
        cache_hit_ratio=round(delta.cache_hits / looked_up, 4) if looked_up else None,
        stage_share={k: round(v / wall, 3) for k, v in delta.stage_s.items()},
    )


def pass_result(
    workers: list[Worker],
    label: str,
    clock: Clock,
    t1: float,
    events: int,
    complete: bool,
    skip_first_lag: bool,
) -> PassResult:
    seconds = max(t1 - clock.t0, 1e-9)
    spent = cpu(workers) - clock.cpu0
    lags = [lag for w in workers for lag in w.lags_between(clock.t0, t1, skip_first_lag)]
    scorer = None
    if any(tick.scorer is not None for w in workers for tick in w.ticks[-1:]):
        delta = counters_between(workers, clock.t0, t1)
        scorer = scorer_share(delta, seconds * len(workers))
    return PassResult(
        label=label,
        events=events,
        seconds=round(seconds, 2),
        eps=round(events / seconds, 1),
        complete=complete,
        cpu_s=round(spent, 2),
        cpu_s_per_1k=round(spent / events * 1000, 4) if events else None,
        loop_lag_ms=Quantiles.of(lags),
        scorer=scorer,
    )


async def drain(
    ctx: RunContext,
    workers: list[Worker],
    group: str,
    copy: tuple[Positions, Positions],
    label: str,
    clock: Clock,
    limit_s: float,
) -> PassResult:
    """Poll the group's commits until it passed the copy's end (complete), or ``limit_s`` ran
    out (then the events committed so far over the time taken, marked incomplete only when
    ``limit_s`` is the drain timeout rather than a planned bound)."""
    start, end = copy
    expected = total(end) - total(start)
    deadline = clock.t0 + limit_s
    while True:
        committed = await ctx.offsets.committed(group, ctx.input)
        now = time.time()
        done = progress(committed, start, end)
        if done >= expected or now > deadline:
            result = pass_result(workers, label, clock, now, done, True, skip_first_lag=True)
            result.complete = done >= expected
            state = "drained" if result.complete else f"bounded at {limit_s:g}s:"
            log(
                f"  {group} {label}: {state} {done} events in {now - clock.t0:.1f}s "
                f"= {result.eps:,.0f}/s"
            )
            return result
        for w in workers:
            w.check_alive()
        await asyncio.sleep(0.1)


async def window(ctx: RunContext, worker: Worker, group: str, seconds: float) -> PassResult:
    """Events ``group`` committed during ``seconds`` from now (for consumers that cannot drain
    the input in the time there is; they start at its beginning, so a backlog is there)."""
    zero = dict.fromkeys(ctx.partitions, 0)
    c0 = progress(await ctx.offsets.committed(group, ctx.input), zero, ctx.input_end)
    clock = Clock(time.time(), worker.cpu())
    await asyncio.sleep(seconds)
    c1 = progress(await ctx.offsets.committed(group, ctx.input), zero, ctx.input_end)
    t1 = time.time()
    worker.check_alive()
    result = pass_result([worker], f"{seconds:g} s window", clock, t1, c1 - c0, True, False)
    log(f"  {group}: {c1 - c0} events in {t1 - clock.t0:.1f}s = {result.eps:,.1f}/s")
    return result


async def caught_up(ctx: RunContext, group: str, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ends = await ctx.offsets.end_offsets(ctx.input)
        committed = await ctx.offsets.committed(group, ctx.input)
        if all(committed.get(p, 0) >= ends[p] for p in ends):
            return True
        await asyncio.sleep(0.25)
    return False


async def wait_assigned(ctx: RunContext, workers: list[Worker], limit_s: float = 60.0) -> None:
    """Until every partition is assigned, each process has some, and that held for two ticks
    in a row (so that no rebalance is pending)."""
    deadline = time.monotonic() + limit_s
    last: list[list[int]] = []
    while time.monotonic() < deadline:
        last = [w.assigned_last(2) for w in workers]
        stable = all(len(x) == 2 and x[0] == x[1] > 0 for x in last)
        if stable and sum(x[-1] for x in last) == len(ctx.partitions):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"partitions not stably assigned within {limit_s}s: {last}")


async def backlog(
    ctx: RunContext,
    workers: list[Worker],
    label: str,
    limit: int,
    templates: list[Template] | None = None,
) -> tuple[tuple[Positions, Positions], Clock]:
    """Processes idle at the end of the input with their partitions: pause them (SIGSTOP),
    append a copy of the input (or ``limit`` events from ``templates``), resume them
    (SIGCONT). The clock runs from the resume."""
    await asyncio.gather(*(w.wait_ready(180) for w in workers))
    await wait_assigned(ctx, workers)
    await asyncio.sleep(1.0)  # the first fetch positions them at the end
    for w in workers:
        w.pause()
    try:
        copy = await ctx.send_copy(f"r{ctx.repetition}-{label}", limit, templates)
    finally:
        cpu0 = cpu(workers)
        for w in workers:
            w.resume()
        t0 = time.time()
    return copy, Clock(t0, cpu0)
