"""latest.md: the run's tables and targets (the method is in bench/README.md)."""

from __future__ import annotations

from pathlib import Path

from bench import summary
from bench.plot import plot, plot_steady
from bench.results import (
    LatencyPoint,
    PassResult,
    Quantiles,
    RunResult,
    Spread,
    SteadyWindow,
    Variants,
)
from bench.summary import fmt, pct

RESULTS = Path(__file__).resolve().parent / "results"

LABELS = {
    "relay": "relay (aiokafka), 1 process",
    "relay_2p": "relay (aiokafka), 2 processes",
    "relay_confluent": "relay (librdkafka), 1 process",
    "relay_confluent_2p": "relay (librdkafka), 2 processes",
    "naive": "naive",
    "naive_executor": "naive + executor",
    "cached": "per-message, cached",
    "streamscore_1p": "streamscore (aiokafka), 1 process",
    "streamscore_2p": "streamscore (aiokafka), 2 processes",
    "streamscore_confluent_1p": "streamscore (librdkafka), 1 process",
    "streamscore_confluent_2p": "streamscore (librdkafka), 2 processes",
    "streamscore_lightgbm_1p": "streamscore (aiokafka, LightGBM backend), 1 process",
}
SAME_RELAY = {
    "relay": "relay",
    "streamscore_1p": "relay",
    "streamscore_2p": "relay_2p",
    "streamscore_confluent_1p": "relay_confluent",
    "streamscore_confluent_2p": "relay_confluent_2p",
    "streamscore_lightgbm_1p": "relay",
    "relay_2p": "relay_2p",
    "relay_confluent": "relay_confluent",
    "relay_confluent_2p": "relay_confluent_2p",
}
"""The relay a variant is a share of: the same Kafka client and number of processes."""


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


def _relay_for(variants: Variants, key: str) -> PassResult | None:
    relay = variants.get(SAME_RELAY.get(key, "relay"))
    return relay.best() if relay else None


def header(run: RunResult) -> list[str]:
    m, s, p = run.machine, run.servers, run.params
    load = ", ".join(f"{x:.2f}" for x in m.loadavg_at_start)
    lookups = ", ".join(f"`{k}` {v:,.1f} ms" for k, v in s.lookup_ms.items())
    backend = p.get("model_backend", "LightGBM")
    return [
        "# streamscore benchmark",
        "",
        f"Run `{run.run_id}` at {run.started_at} ({'quick' if p['quick'] else 'full'} run, "
        f"{run.duration_s:.0f} s) on **{s.mongo_server}** (wire version of MongoDB "
        f"{s.mongo_version}) at {s.mongo_hosts} and Kafka {s.kafka_version} at "
        f"{s.kafka_bootstrap}. Machine: {m.nproc} x {m.cpu_model}, {m.mem_total_mb:,} MB, load "
        f"average at start {load} (shared: figures move 10-20 % between runs). Input: "
        f"{p['events']:,} events on 4 partitions, {p['entities']:,} entities, model "
        f"`{p['model']}` (default backend here: {backend}), entity cache TTL "
        f"{p['cache_ttl_s']:g} s. Stream variants: "
        f"{len(run.repetitions)} repetition(s); figures are the median [min-max] over them, "
        "ratios taken within each repetition.",
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


def _spread_per_run(
    run: RunResult, key: str, label: str, other: str, other_label: str | None = None
) -> Spread | None:
    """This pass's events/s over ``other``'s best (or ``other_label``) pass, per repetition."""
    values: list[float | None] = []
    for variants in run.repetitions:
        mine, theirs = variants.get(key), variants.get(other)
        a = next((p for p in mine.passes if p.label == label), None) if mine else None
        b = theirs.best(other_label) if theirs else None
        values.append(a.eps / b.eps if a and b and b.eps else None)
    return Spread.of(values)


def _fastest_per_run(run: RunResult, key: str, label: str, processes: int) -> Spread | None:
    values: list[float | None] = []
    for variants in run.repetitions:
        mine, fast = variants.get(key), summary.fastest_relay(variants, processes)
        a = next((p for p in mine.passes if p.label == label), None) if mine else None
        values.append(a.eps / fast[1].eps if a and fast and fast[1].eps else None)
    return Spread.of(values)


def medians_table(run: RunResult) -> list[str]:
    lines = [
        "## Stream variants: median [min-max] over the repetitions",
        "",
        "| variant | pass | events/s | x per-message cached | % of relay (same client, "
        "processes) | % of fastest relay (same processes) | e2e p50 / p99 ms @50 % "
        "| loop lag p99 ms | CPU s / 1k ev | peak RSS MB | DB wait share | cache hit ratio |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        figs = run.medians.get(key)
        variant_runs = [v[key] for v in run.repetitions if key in v]
        if not variant_runs:
            continue
        errors = [v.error for v in variant_runs if v.error]
        if errors and not figs:
            lines.append(f"| {label} | failed | {errors[0][:200]!r} |" + " |" * 9)
            continue
        figs = figs or {}
        labels = list(dict.fromkeys(p.label for v in variant_runs for p in v.passes))
        processes = variant_runs[0].processes
        for i, pass_label in enumerate(labels):
            last = i == len(labels) - 1
            lat = "-"
            if last and "lat50.p50_ms" in figs:
                lat = f"{fmt(figs.get('lat50.p50_ms'))} / {fmt(figs.get('lat50.p99_ms'))}"
            relay_key = SAME_RELAY.get(key)
            cells = [
                label if i == 0 else "",
                pass_label,
                fmt(figs.get(f"{pass_label}.eps")),
                fmt(_spread_per_run(run, key, pass_label, "cached"), 1, suffix="x"),
                pct(_spread_per_run(run, key, pass_label, relay_key)) if relay_key else "-",
                pct(_fastest_per_run(run, key, pass_label, processes)),
                lat,
                fmt(figs.get(f"{pass_label}.loop_lag_p99_ms"), 1),
                fmt(figs.get(f"{pass_label}.cpu_s_per_1k"), 3),
                fmt(figs.get("peak_rss_mb")) if i == 0 else "",
                pct(figs.get(f"{pass_label}.db_wait_share")),
                fmt(figs.get(f"{pass_label}.cache_hit_ratio"), 3),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if errors:
            lines.append(
                f"| | {len(errors)} repetition(s) failed: {errors[0][:200]!r} |" + " |" * 10
            )
    ratios = [(name, s) for name, s in run.ratios.items() if len(s.values) > 0]
    if ratios:
        lines += ["", "Ratios (within each repetition, then median [min-max]):", ""]
        lines += [f"- `{name}`: {fmt(s, 3)}" for name, s in ratios]
    return [*lines, ""]


def steady(run: RunResult) -> list[str]:
    st = run.steady
    if st is None:
        return []
    lines = [
        "## Steady state (1 process, streams.app.build_app)",
        "",
        f"Entity cache TTL {st.ttl_s:g} s; Zipf({st.zipf_s}) over the seeded entities plus "
        f"{st.unknown_ratio:.0%} unknown ids ({st.distinct_entities:,} distinct ids in the mix; "
        f"the 1 % hottest entities carry {st.hottest_share:.0%} of the events); windows of "
        f"{st.window_s:g} s; both passes start with an empty cache. Fixed rate: "
        f"{st.rate_source}. Plot: `steady_state.png`.",
        "",
    ]
    if st.error:
        lines += [f"**Failed**: `{st.error[:500]}`", ""]

    def row(name: str, w: SteadyWindow) -> str:
        return (
            f"| {name} | {w.seconds:g} | {_f(w.sent_eps, 0)} | {_f(w.eps, 0)} "
            f"| {_q(w.latency_ms)} | {_f(w.cache_hit_ratio, 3)} | {_pct(w.db_wait_share)} "
            f"| {_f(w.loop_lag_p99_ms, 1)} | {_f(w.cpu_s_per_1k, 3)} |"
        )

    head = (
        "| window from (s) | s | sent ev/s | scored ev/s | e2e p50 / p99 ms | cache hit ratio "
        "| DB wait share | loop lag p99 ms | CPU s / 1k ev |"
    )
    for p in st.passes:
        offered = f", offered {p.offered_eps:,.0f} ev/s" if p.offered_eps else ""
        delivered = (
            f", {p.delivered:,} of {p.events:,} delivered" if p.delivered is not None else ""
        )
        dry = " The backlog ran out before the end." if p.ran_dry else ""
        lines += [
            f"### {p.label}{offered}: {p.seconds:g} s, {p.scored:,} scored{delivered}.{dry}",
            "",
            head,
            "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        lines += [row(f"{w.t_s:g}", w) for w in p.windows]
        if p.steady is not None:
            lines.append(row(f"**after the first TTL ({st.ttl_s:g} s)**", p.steady))
        lines.append("")
    if (found := summary.steady_throughput(run)) is not None:
        lines += [
            f"Saturating, after the first TTL: {found[0]:,.0f} ev/s = {found[1]:.0%} of the "
            f"1-process warm drain ({st.warm_reference_eps:,.0f} ev/s, median).",
            "",
        ]
    return lines


def streams(variants: Variants, ratios: dict[str, float | None]) -> list[str]:
    cached = variants.get("cached")
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
        variant = variants.get(key)
        if variant is None:
            continue
        if variant.error:
            lines.append(f"| {label} | failed: {variant.error[:300]!r} |" + " |" * 9)
            continue
        relay = _relay_for(variants, key)
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
    naive = variants.get("naive")
    if naive and naive.best():
        lines += [
            "",
            "Against naive (uncached `find_one` per event): warm "
            f"{_f(ratios.get('warm_over_naive'), 0)}x, cold "
            f"{_f(ratios.get('cold_over_naive'), 0)}x. These ratios mostly measure "
            "the per-event database round trip, not the scorer; the headline is the "
            "per-message cached baseline.",
        ]
    return [*lines, ""]


def stages(variants: Variants) -> list[str]:
    rows = [
        (key, tp)
        for key in summary.SCORER_KEYS
        for tp in (variants[key].passes if key in variants else [])
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


def latency(variants: Variants) -> list[str]:
    lines = [
        "### End-to-end latency at fixed offered rates (open loop)",
        "",
        "| variant | of max | offered ev/s | sent ev/s | p50 / p99 ms | loop lag p99 ms "
        "| CPU s / 1k ev | p50 / p99 sent → output sent | p50 / p99 output sent → read |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for key, label in LABELS.items():
        for x in variants[key].latency if key in variants else []:
            of_max = f"{x.fraction:.0%}" + (f" ({x.matches})" if x.matches else "")
            lines.append(
                f"| {label} | {of_max} | {_f(x.offered_eps)} | {_f(x.achieved_send_eps)} "
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
    lines = header(run) + targets(run) + medians_table(run) + steady(run)
    for i, variants in enumerate(run.repetitions):
        ratios = run.ratios_by_run[i] if i < len(run.ratios_by_run) else {}
        lines += [f"## Repetition {i + 1} of {len(run.repetitions)}", ""]
        lines += streams(variants, ratios) + stages(variants) + latency(variants)
    lines += sidecar(run)
    if run.product_changed_during_run:
        changed = ", ".join(f"`{c}`" for c in run.product_changed_during_run)
        lines += [f"**Product files changed while this run went on**: {changed}.", ""]
    if run.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in run.notes], ""]
    drawn = "" if run.plot else " (not drawn: matplotlib is not installed)"
    lines.append(
        f"Raw figures: `latest.json`. Plots: `latency_vs_throughput.png` (repetition 1){drawn}, "
        "`steady_state.png`."
    )
    return "\n".join(lines) + "\n"


def write(run: RunResult, name: str = "latest") -> None:
    """``<name>.json`` and ``<name>.md``; the plot only for ``latest``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if name == "latest":
        run.plot = plot(run, RESULTS / "latency_vs_throughput.png", LABELS)
        run.steady_plot = plot_steady(run, RESULTS / "steady_state.png")
    (RESULTS / f"{name}.json").write_text(run.to_json())
    (RESULTS / f"{name}.md").write_text(markdown(run))
