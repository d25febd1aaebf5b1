"""latest.md: the run's tables and targets (the method is in bench/README.md)."""

from __future__ import annotations

from pathlib import Path

from bench.plot import plot
from bench.results import LatencyPoint, PassResult, Quantiles, RunResult, VariantResult

RESULTS = Path(__file__).resolve().parent / "results"

LABELS = {
    "relay": "relay, 1 process (ceiling)",
    "relay_2p": "relay, 2 processes",
    "naive": "naive",
    "naive_executor": "naive + executor",
    "cached": "per-message, cached",
    "streamscore_1p": "streamscore, 1 process",
    "streamscore_2p": "streamscore, 2 processes",
}


def _f(value: float | int | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _q(q: Quantiles) -> str:
    return f"{_f(q.p50)} / {_f(q.p99)}" if q.p50 is not None else "-"


def _lat(point: LatencyPoint | None) -> str:
    if point is None:
        return "-"
    lost = "" if point.delivered >= point.sent else f" ({point.delivered}/{point.sent})"
    return _q(point.latency_ms) + lost


def _relay_for(run: RunResult, variant: VariantResult) -> PassResult | None:
    relay = run.variants.get("relay_2p" if variant.processes == 2 else "relay")
    return relay.best() if relay else None


def header(run: RunResult) -> list[str]:
    m, s, p = run.machine, run.servers, run.params
    load = ", ".join(f"{x:.2f}" for x in m.loadavg_at_start)
    lookups = ", ".join(f"`{k}` {v:,.1f} ms" for k, v in s.lookup_ms.items())
    return [
        "# streamscore benchmark",
        "",
        f"Run `{run.run_id}` at {run.started_at} ({'quick' if p['quick'] else 'full'} run, "
        f"{run.duration_s:.0f} s) on **{s.mongo_server}** (wire version of MongoDB "
        f"{s.mongo_version}) at {s.mongo_hosts} and Kafka {s.kafka_version} at "
        f"{s.kafka_bootstrap}. Machine: {m.nproc} x {m.cpu_model}, {m.mem_total_mb:,} MB, load "
        f"average at start {load} (shared: figures move 10-20 % between runs). Input: "
        f"{p['events']:,} events on 4 partitions, {p['entities']:,} entities, model "
        f"`{p['model']}`, entity cache TTL {p['cache_ttl_s']:g} s.",
        "",
        f"One lookup by `_id` on this server (seeded collection, median of 3): {lookups}.",
        "",
        "Method, columns and caveats: `bench/README.md`.",
        "",
    ]


def targets(run: RunResult) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met? | from |", "|---|---|---|---|"]
    for t in run.targets:
        met = "-" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.target} | {t.measured} | {met} | {t.source} |")
    return [*lines, ""]


def streams(run: RunResult) -> list[str]:
    cached = run.variants.get("cached")
    cached_best = cached.best() if cached else None
    cached_eps = cached_best.eps if cached_best else None
    lines = [
        "## Stream variants",
        "",
        "| variant | pass | events/s | x per-message cached | % of relay (same processes) "
        "| e2e p50 / p99 ms @50 % | loop lag p99 ms | CPU s / 1k ev | peak RSS MB "
        "| DB wait share | cache hit ratio |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        variant = run.variants.get(key)
        if variant is None:
            continue
        relay = _relay_for(run, variant)
        for i, tp in enumerate(variant.passes):
            last = i == len(variant.passes) - 1
            scorer = tp.scorer
            cells = [
                label if i == 0 else "",
                tp.label + ("" if tp.complete else " (bounded)"),
                _f(tp.eps),
                _f(tp.eps / cached_eps, 1, "x") if cached_eps else "-",
                _pct(tp.eps / relay.eps) if relay else "-",
                _lat(variant.at(0.5)) if last else "",
                _f(tp.loop_lag_ms.p99, 2),
                _f(tp.cpu_s_per_1k, 3),
                _f(variant.peak_rss_mb) if i == 0 else "",
                _pct(scorer.db_wait_share) if scorer else "-",
                _f(scorer.cache_hit_ratio, 3) if scorer else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    naive = run.variants.get("naive")
    if naive and naive.best():
        lines += [
            "",
            "Against naive (uncached `find_one` per event): warm "
            f"{_f(run.ratios.get('warm_over_naive'), 0)}x, cold "
            f"{_f(run.ratios.get('cold_over_naive'), 0)}x. These ratios mostly measure "
            "the per-event database round trip, not the scorer; the headline is the "
            "per-message cached baseline.",
        ]
    return [*lines, ""]


def stages(run: RunResult) -> list[str]:
    rows = [
        (key, tp)
        for key in ("streamscore_1p", "streamscore_2p")
        for tp in (run.variants[key].passes if key in run.variants else [])
        if tp.scorer
    ]
    if not rows:
        return []
    names = ("parse", "score", "send", "ack", "commit")
    lines = [
        "### Where the scorer's wall time goes (share of each process's wall time)",
        "",
        "| variant | pass | " + " | ".join(names) + " | of score: DB wait | of score: model "
        "| mean batch |",
        "|---|---|" + "---:|" * (len(names) + 3),
    ]
    for key, tp in rows:
        sc = tp.scorer
        if sc is None:
            continue
        cells = [_pct(sc.stage_share.get(n)) for n in names]
        lines.append(
            f"| {LABELS[key]} | {tp.label} | " + " | ".join(cells) + f" | {_pct(sc.db_wait_share)} "
            f"| {_pct(sc.model_share)} | {_f(sc.mean_batch)} |"
        )
    return [*lines, ""]


def latency(run: RunResult) -> list[str]:
    lines = [
        "### End-to-end latency at fixed offered rates (open loop)",
        "",
        "| variant | of max | offered ev/s | sent ev/s | p50 / p99 ms | loop lag p99 ms "
        "| CPU s / 1k ev | p50 / p99 sent → output sent | p50 / p99 output sent → read |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for key, label in LABELS.items():
        for x in run.variants[key].latency if key in run.variants else []:
            lines.append(
                f"| {label} | {x.fraction:.0%} | {_f(x.offered_eps)} | {_f(x.achieved_send_eps)} "
                f"| {_lat(x)} | {_f(x.loop_lag_ms.p99, 2)} | {_f(x.cpu_s_per_1k, 3)} "
                f"| {_q(x.to_output_sent_ms)} | {_q(x.output_sent_to_read_ms)} |"
            )
    return [*lines, ""]


def sidecar(run: RunResult) -> list[str]:
    side = run.sidecar
    if side is None:
        return []
    lines = [
        "## HTTP sidecar (`POST /predict`, one event per request, closed loop)",
        "",
        "| server | concurrency | req/s | p50 / p99 ms | non-200 | loop lag p99 ms "
        "| server CPU s / 1k req |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, server in side.servers.items():
        for lvl in server.levels:
            lines.append(
                f"| {name} | {lvl.concurrency} | {_f(lvl.rps)} | {_q(lvl.latency_ms)} "
                f"| {lvl.requests - lvl.ok} | {_f(lvl.loop_lag_p99_ms)} "
                f"| {_f(lvl.server_cpu_s_per_1k, 3)} |"
            )
    rss = ", ".join(f"{n} {s.peak_rss_mb:,.0f} MB" for n, s in side.servers.items())
    return [*lines, "", f"Peak RSS: {rss}. Cache warm-up {side.cache_warmup_s:g} s.", ""]


def markdown(run: RunResult) -> str:
    lines = header(run) + targets(run) + streams(run) + stages(run) + latency(run)
    lines += sidecar(run)
    if run.product_changed_during_run:
        changed = ", ".join(f"`{c}`" for c in run.product_changed_during_run)
        lines += [f"**Product files changed while this run went on**: {changed}.", ""]
    if run.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in run.notes], ""]
    drawn = "" if run.plot else " (not drawn: matplotlib is not installed)"
    lines.append(f"Raw figures: `latest.json`. Plot: `latency_vs_throughput.png`{drawn}.")
    return "\n".join(lines) + "\n"


def write(run: RunResult, name: str = "latest") -> None:
    """``<name>.json`` and ``<name>.md``; the plot only for ``latest``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if name == "latest":
        run.plot = plot(run, RESULTS / "latency_vs_throughput.png", LABELS)
    (RESULTS / f"{name}.json").write_text(run.to_json())
    (RESULTS / f"{name}.md").write_text(markdown(run))
