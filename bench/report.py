"""Writing the results: latest.json, latest.md and latency_vs_throughput.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

LABELS = {
    "relay": "relay (ceiling)",
    "naive": "naive",
    "naive_executor": "naive + executor",
    "streamscore_1p": "streamscore, 1 process",
    "streamscore_2p": "streamscore, 2 processes",
}


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "**no**")


def _lat(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    star = "" if entry["delivered"] >= entry["sent"] else f" ({entry['delivered']}/{entry['sent']})"
    return f"{_f(entry['p50_ms'])} / {_f(entry['p95_ms'])} / {_f(entry['p99_ms'])}{star}"


def _split(entry: dict[str, Any], part: str) -> str:
    values = (entry.get("split_ms") or {}).get(part) or {}
    if values.get("p50") is None:
        return "-"
    return f"{_f(values['p50'])} / {_f(values['p99'])}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown(results: dict[str, Any]) -> str:
    v = results["variants"]
    m = results["machine"]
    s = results["servers"]
    p = results["params"]
    lines = [
        "# streamscore benchmark",
        "",
        f"Run `{results['run_id']}` at {results['started_at']} "
        f"({'quick' if p['quick'] else 'full'} run, {results['duration_s']:.0f} s). "
        f"Machine: {m['nproc']} x {m['cpu_model']}, {m['mem_total_mb']:,} MB, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(shared machine: figures are noisy). "
        f"Kafka {s['kafka_version']}; MongoDB wire server {s['mongo_version']}"
        + (f" = **FerretDB {s['ferretdb_version']}**" if s.get("ferretdb_version") else "")
        + f". Input: {p['events']:,} events on 4 partitions, "
        f"{p['entities']:,} entities, model `{p['model']}`.",
        "",
    ]
    costs = s.get("lookup_ms") or {}
    if costs:
        lines += [
            "One lookup by `_id` on this server, measured on the seeded collection: "
            + ", ".join(f"`{k}` {v:,.1f} ms" for k, v in costs.items())
            + ".",
            "",
        ]
    if s.get("ferretdb_version"):
        lines += [
            "FerretDB v1 uses no index for `_id` lookups: `find_one` scans until the first "
            "match (half the collection on average), and `{_id: {$in: [...]}}` scans all of it "
            "and filters outside SQLite, so one `$in` costs ~0.7-0.9 s however few ids it names "
            "(see bench/results/mongo_lookup.json too). MongoDB would use its `_id` index. "
            "Every figure that touches the database is a FerretDB figure.",
            "",
        ]
    lines += [
        "## Targets",
        "",
        "| target | measured | target met? |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {_met(t['met'])} |")
    lines += [
        "",
        "## Stream variants",
        "",
        "Throughput: sustained events/s while draining the prepared input (naive variants: "
        "events committed during a fixed window). Latency: event sent (= `event_time`) → "
        "output read back, open loop at 50 % of that variant's own max (all rates below). "
        "Loop lag: how late a 10 ms timer fires on the consumer's event loop, p99 during the "
        "throughput measurement. CPU: user+system seconds of the consumer process(es) per "
        "1,000 events. RSS: peak (VmHWM).",
        "",
        "| variant | pass | events/s | x naive | % of relay | e2e p50/p95/p99 ms @50% "
        "| loop lag p99 ms | CPU s / 1k ev | peak RSS MB | DB wait share |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for key in ("relay", "naive", "naive_executor", "streamscore_2p", "streamscore_1p"):
        entry = v.get(key)
        if not entry:
            continue
        at50 = next((x for x in entry.get("latency", []) if x["fraction"] == 0.5), None)
        for i, tp in enumerate(entry["throughput"]):
            lines.append(
                "| "
                + " | ".join(
                    [
                        LABELS[key] if i == 0 else "",
                        tp["pass"],
                        _f(tp.get("eps")),
                        _f(tp.get("x_naive"), 1, "x"),
                        _f(tp.get("pct_relay"), 0, " %"),
                        _lat(at50) if i == len(entry["throughput"]) - 1 else "",
                        _f(tp.get("loop_lag_ms", {}).get("p99"), 2),
                        _f(tp.get("cpu_s_per_1k"), 3),
                        _f(entry.get("peak_rss_mb")) if i == 0 else "",
                        _f(tp.get("db_wait_share"), 2)
                        if tp.get("db_wait_share") is not None
                        else "-",
                    ]
                )
                + " |"
            )
    stage_rows = [
        (key, tp)
        for key in ("streamscore_1p", "streamscore_2p")
        for tp in (v.get(key) or {}).get("throughput", [])
        if tp.get("stage_share")
    ]
    if stage_rows:
        lines += [
            "",
            "### Where the scorer's wall time goes (share of each process's wall time)",
            "",
            "The processor's own stage timers (`StreamStats.stage_seconds`, "
            "`PipelineStats`): parse; score = enrichment + model + building predictions; "
            "publish = enqueueing the outputs and waiting for their acks; commit; between "
            "batches = the rest (FastStream fetching and dispatching). When the processor "
            "pipelines batches (acks and commit of one batch while the next is parsed and "
            "scored) the stages overlap, the shares can add up to more than 100 % and "
            "'between' is then not defined.",
            "",
            "| variant | pass | parse | score | of which DB wait | of which model "
            "| publish + acks | commit | between batches | cache hit ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, tp in stage_rows:
            st = tp["stage_share"]
            lines.append(
                f"| {LABELS[key]} | {tp['pass']} | {st['parse']:.0%} | {st['score']:.0%} "
                f"| {tp.get('db_wait_share', 0):.0%} | {tp.get('model_share', 0):.0%} "
                f"| {st['publish']:.0%} | {st['commit']:.0%} "
                f"| {_pct(st['between_batches'])} "
                f"| {_f(tp.get('cache_hit_ratio'), 3)} |"
            )
    lines += [
        "",
        "### End-to-end latency at fixed offered rates (open loop)",
        "",
        "The last two columns split each event's latency at the moment the consumer sent "
        "its output (the output record's Kafka timestamp, ms resolution): sent → output "
        "sent covers Kafka in, batching, parsing, scoring; output sent → read covers the "
        "producer's linger, the broker and the read-back.",
        "",
        "| variant | fraction of max | offered ev/s | sent ev/s | p50 / p95 / p99 ms "
        "| loop lag p99 ms | CPU s / 1k ev | p50 / p99 sent → output sent "
        "| p50 / p99 output sent → read |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for key in ("relay", "naive", "naive_executor", "streamscore_1p", "streamscore_2p"):
        entry = v.get(key)
        if not entry:
            continue
        for x in entry.get("latency", []):
            lines.append(
                f"| {LABELS[key]} | {x['fraction']:.0%} | {_f(x['offered_eps'])} "
                f"| {_f(x['achieved_send_eps'])} | {_lat(x)} "
                f"| {_f(x.get('loop_lag_ms', {}).get('p99'), 2)} | {_f(x.get('cpu_s_per_1k'), 3)} "
                f"| {_split(x, 'sent_to_output_sent')} | {_split(x, 'output_sent_to_read')} |"
            )
    side = results.get("sidecar")
    if side:
        lines += [
            "",
            "## HTTP sidecar (`POST /predict`, one event per request, closed loop)",
            "",
            "| server | concurrency | req/s | p50 ms | p95 ms | p99 ms | non-200 "
            "| loop lag p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("streamscore", "naive"):
            server = side.get(name)
            if not server:
                continue
            for lvl in server["levels"]:
                bad = lvl["requests"] - lvl["ok"]
                lines.append(
                    f"| {name} | {lvl['concurrency']} | {_f(lvl['rps'])} | {_f(lvl['p50_ms'])} "
                    f"| {_f(lvl['p95_ms'])} | {_f(lvl['p99_ms'])} | {bad} "
                    f"| {_f(lvl.get('loop_lag_p99_ms'), 1)} |"
                )
        lines += [
            "",
            "Peak RSS: streamscore sidecar "
            f"{_f(side.get('streamscore', {}).get('peak_rss_mb'))} MB, "
            f"naive {_f(side.get('naive', {}).get('peak_rss_mb'))} MB. Each server got "
            f"{side['warmup_s']:g} s of unmeasured warm-up at concurrency 16 first (the "
            f"streamscore sidecar's entity cache was filled before that, "
            f"{side.get('cache_warmup_s', 0):g} s). The sidecar's loop lag is read from its own "
            "Prometheus histogram (bucket upper bound); the naive server has none.",
        ]
    changed = (results.get("product_sources") or {}).get("changed_during_run")
    if changed:
        lines += [
            "",
            "**Product files changed while this run was going on** (other work in progress): "
            + ", ".join(f"`{c}`" for c in changed)
            + ". Processes started before and after the change ran different code.",
        ]
    notes = results.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        "Raw figures: `bench/results/latest.json`. Plot: `bench/results/latency_vs_throughput.png`"
        + ("" if results.get("plot") else " (not drawn: matplotlib is not installed)")
        + ".",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        # optional (dev dependency): without it the PNG is skipped
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
        import matplotlib.ticker  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    colors = {
        "relay": "tab:gray",
        "naive": "tab:red",
        "naive_executor": "tab:orange",
        "streamscore_1p": "tab:blue",
        "streamscore_2p": "tab:green",
    }
    for key, entry in results["variants"].items():
        points = [
            (x["achieved_send_eps"], x["p99_ms"], x["p50_ms"])
            for x in entry.get("latency", [])
            if x.get("p99_ms") is not None
        ]
        if not points:
            continue
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", color=colors[key], label=f"{LABELS[key]} p99")
        ax.plot(
            xs,
            [p[2] for p in points],
            "o--",
            color=colors[key],
            alpha=0.5,
            label=f"{LABELS[key]} p50",
        )
        best = max((tp["eps"] for tp in entry["throughput"] if tp.get("eps")), default=None)
        if best:
            ax.axvline(best, color=colors[key], alpha=0.25, linewidth=4)
    ax.axhline(50, color="black", linestyle=":", linewidth=1, label="50 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("offered events/s (open loop); faint vertical bars: drained max")
    ax.set_ylabel("end-to-end latency, ms")
    server = results["servers"]
    db = f"FerretDB {server['ferretdb_version']}" if server.get("ferretdb_version") else "MongoDB"
    ax.set_title(f"latency vs throughput — {results['machine']['nproc']} cores, {db}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "latency_vs_throughput.png"
    results["plot"] = plot(results, png)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (RESULTS / "latest.md").write_text(markdown(results))
