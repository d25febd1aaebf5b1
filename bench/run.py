"""``python -m bench.run``: streamscore against a relay ceiling and per-event baselines.

The method (what each variant is, how each figure is taken, how to read them) is in
bench/README.md; ``--help`` lists the options. Results go to bench/results/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

from bench import phases, report, summary
from bench.config import BASELINES, RELAYS, SCORERS, BenchConfig, parse_args
from bench.context import RunContext
from bench.results import RunResult, VariantResult, Variants
from bench.sidecar import sidecar
from bench.steady import steady
from bench.sysinfo import loadavg, machine
from bench.worker_proc import ROOT, log

PRODUCT_DIRS = ("streams", "scoring", "api", "schemas", "settings", "telemetry", "streamscore_cli")


def product_sources() -> dict[str, str]:
    """sha256 of every product source file (others may edit them while the bench runs)."""
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in PRODUCT_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


async def guarded(
    ctx: RunContext, key: str, processes: int, phase: Callable[[], Awaitable[VariantResult]]
) -> VariantResult:
    """Run one variant's phase; when it fails, stop its processes and say why in the result
    (the other variants are still measured)."""
    first = len(ctx.workers)
    try:
        return await phase()
    except Exception as exc:
        log(f"{key}: FAILED: {exc!r}")
        for w in ctx.workers[first:]:
            try:
                await w.stop()
            except Exception as stop_exc:
                log(f"  could not stop {w.name}: {stop_exc!r}")
        return VariantResult(key, processes, error=f"{type(exc).__name__}: {str(exc)[:1500]}")


async def repetition(ctx: RunContext) -> Variants:
    """Every stream variant once: the scorers first, so that each 1-process relay can also
    be offered its scorer's 50 % rate (the same offered rate); then the per-event baselines."""
    only, out = ctx.config.only, Variants()
    for key, spec in SCORERS.items():
        if key in only:
            out[key] = await guarded(
                ctx, key, spec.processes, partial(phases.scorer, ctx, key, spec)
            )
    for key, spec in RELAYS.items():
        if key not in only:
            continue
        matched: dict[str, float] = {}
        scorer = summary.SCORER_MATCH.get(key, "")
        if scorer in out and (at50 := out[scorer].at(0.5)) is not None:
            matched[f"{scorer}@50%"] = at50.offered_eps
        phase = partial(phases.relay, ctx, key, spec, matched)
        out[key] = await guarded(ctx, key, spec.processes, phase)
    for key in BASELINES:
        if key in only:
            out[key] = await guarded(ctx, key, 1, partial(phases.baseline, ctx, key))
    return out


async def measure(ctx: RunContext, run: RunResult) -> None:
    config = ctx.config
    await ctx.prepare()
    run.servers = await ctx.servers()
    run.servers.lookup_ms.update(await ctx.lookup_costs())
    log(f"{run.servers.mongo_server}: lookups (ms) {run.servers.lookup_ms}")
    if any(k in config.only for k in (*RELAYS, *BASELINES, *SCORERS)):
        for i in range(config.profile.runs):
            ctx.repetition = i
            log(f"=== repetition {i + 1} of {config.profile.runs}")
            run.repetitions.append(await repetition(ctx))
    if "steady" in config.only:
        warm = summary.medians(run.repetitions).get("streamscore_1p", {}).get("warm.eps")
        run.steady = await steady(ctx, warm.median if warm else None)
    if "sidecar" in config.only:
        run.sidecar = await sidecar(ctx)


def notes(config: BenchConfig, run: RunResult) -> list[str]:
    out = []
    if run.servers.mongo_server.startswith("FerretDB"):
        out.append(
            "FerretDB v1 answers `_id` lookups by scanning the collection: every figure that "
            "touches the database (cold, naive, per-message cached misses) is a FerretDB figure."
        )
    if config.profile_path:
        out.append(f"The warm 1-process scorer ran under a profiler ({config.profile_path}).")
    return out


async def bench(config: BenchConfig) -> RunResult:
    ctx = RunContext(config)
    log(f"run {ctx.run_id}; child logs in {ctx.log_dir}")
    started, before = time.time(), product_sources()
    run = RunResult(
        run_id=ctx.run_id,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        params=config.params(),
        machine=machine(),
        servers=await ctx.servers(),
        log_dir=str(ctx.log_dir),
    )
    try:
        await measure(ctx, run)
    finally:
        await ctx.cleanup()
    after = product_sources()
    run.duration_s = round(time.time() - started, 1)
    run.product_sha256 = hashlib.sha256(json.dumps(after, sort_keys=True).encode()).hexdigest()
    run.product_changed_during_run = sorted(
        n for n in set(before) | set(after) if before.get(n) != after.get(n)
    )
    if run.product_changed_during_run:
        log(f"WARNING: product files changed during the run: {run.product_changed_during_run}")
    run.machine = type(run.machine)(**{**run.machine.__dict__, "loadavg_at_end": loadavg()})
    run.medians = summary.medians(run.repetitions)
    run.ratios_by_run = [summary.ratios(variants) for variants in run.repetitions]
    run.ratios = summary.ratio_spreads(run.ratios_by_run)
    run.targets = summary.targets(run)
    run.notes = notes(config, run)
    return run


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    os.chdir(ROOT)
    if not config.settings.model.path.is_file():
        print(f"no model at {config.settings.model.path}: run `make train` first", file=sys.stderr)
        return 2
    run = asyncio.run(bench(config))
    if config.write:
        report.write(run, config.name)
        log(f"wrote {report.RESULTS}/{config.name}.json and .md")
    print(report.markdown(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
