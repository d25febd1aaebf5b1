"""latency_vs_throughput.png: e2e latency against offered rate, per variant (matplotlib,
optional: without it the plot is skipped)."""

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
    for key, variant in run.variants.items():
        points = [
            (x.achieved_send_eps, x.latency_ms.p99, x.latency_ms.p50)
            for x in variant.latency
            if x.latency_ms.p99 is not None
        ]
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
