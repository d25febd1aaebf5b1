"""latency_vs_throughput.png: e2e latency against offered rate, per variant (the first
repetition); steady_state.png: the steady-state passes over time (matplotlib, optional:
without it the plots are skipped)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.results import RunResult

COLORS = {
    "relay": "tab:gray",
    "relay_2p": "silver",
    "naive": "tab:red",
    "naive_executor": "tab:orange",
    "cached": "tab:purple",
    "streamscore_1p": "tab:blue",
    "streamscore_2p": "tab:green",
    "relay_confluent": "black",
    "relay_confluent_2p": "dimgray",
    "streamscore_confluent_1p": "tab:cyan",
    "streamscore_confluent_2p": "tab:olive",
    "streamscore_lightgbm_1p": "tab:brown",
}


def _pyplot() -> Any | None:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(run: RunResult, path: Path, labels: dict[str, str]) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    ticker = importlib.import_module("matplotlib.ticker")
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    if not run.repetitions:
        return False
    for key, variant in run.repetitions[0].items():
        points = sorted(
            (x.achieved_send_eps, x.latency_ms.p99, x.latency_ms.p50)
            for x in variant.latency
            if x.latency_ms.p99 is not None
        )
        if not points:
            continue
        color, label = COLORS.get(key, "black"), labels.get(key, key)
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", color=color, label=f"{label} p99")
        ax.plot(xs, [p[2] for p in points], "o--", color=color, alpha=0.5, label=f"{label} p50")
        if (best := variant.best()) is not None:
            ax.axvline(best.eps, color=color, alpha=0.25, linewidth=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.set_xlabel("offered events/s (open loop); faint vertical bars: drained max")
    ax.set_ylabel("end-to-end latency, ms")
    ax.set_title(
        f"latency vs throughput — {run.machine.nproc} cores, {run.servers.mongo_server}, "
        f"{run.started_at[:10]}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_steady(run: RunResult, path: Path) -> bool:
    """Throughput, e2e p50/p99, cache hit ratio and DB wait share over time, per pass."""
    plt = _pyplot()
    st = run.steady
    if plt is None or st is None or not st.passes:
        return False
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), dpi=110, sharex=True)
    styles = {"fixed rate": "tab:blue", "saturating": "tab:red"}
    for p in st.passes:
        color = styles.get(p.label, "black")
        xs = [w.t_s + w.seconds / 2 for w in p.windows]
        axes[0].plot(xs, [w.eps for w in p.windows], "o-", color=color, label=f"{p.label}: scored")
        if any(w.sent_eps for w in p.windows):
            axes[0].plot(
                xs, [w.sent_eps for w in p.windows], ":", color=color, label=f"{p.label}: sent"
            )
        lat = [(x, w.latency_ms) for x, w in zip(xs, p.windows, strict=True) if w.latency_ms.p99]
        if lat:
            axes[1].plot(
                [x for x, _ in lat],
                [q.p99 for _, q in lat],
                "o-",
                color=color,
                label=f"{p.label}: p99",
            )
            axes[1].plot(
                [x for x, _ in lat],
                [q.p50 for _, q in lat],
                "o--",
                color=color,
                alpha=0.5,
                label=f"{p.label}: p50",
            )
        axes[2].plot(xs, [w.cache_hit_ratio for w in p.windows], "o-", color=color, label=p.label)
        axes[3].plot(xs, [w.db_wait_share for w in p.windows], "o-", color=color, label=p.label)
    if st.warm_reference_eps:
        axes[0].axhline(
            st.warm_reference_eps, color="gray", alpha=0.5, linewidth=3, label="warm drain (median)"
        )
        axes[0].axhline(
            0.9 * st.warm_reference_eps, color="gray", alpha=0.5, linestyle="--", label="90 % of it"
        )
    longest = max(p.seconds for p in st.passes)
    for ax in axes:
        for k in range(1, int(longest // st.ttl_s) + 1):
            ax.axvline(k * st.ttl_s, color="gray", alpha=0.2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("events/s")
    axes[1].set_ylabel("e2e ms")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("cache hit ratio")
    axes[3].set_ylabel("DB wait share")
    axes[3].set_xlabel(
        f"seconds from the start of the pass (vertical lines: every TTL, {st.ttl_s:g} s)"
    )
    axes[0].set_title(
        f"steady state, 1 process, Zipf {st.zipf_s}, {st.window_s:g} s windows — "
        f"{run.servers.mongo_server}, {run.started_at[:10]}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
