"""Ratios between variants, and the targets the figures are held to."""

from __future__ import annotations

from bench.results import PassResult, RunResult, Target

ISSUE_12 = "issue 12"
ISSUE_14 = "issue 14"
DESIGN = "design"


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _pass(run: RunResult, key: str, label: str | None = None) -> PassResult | None:
    variant = run.variants.get(key)
    if variant is None:
        return None
    if label == "cold":  # bounded drains count too: the rate over the time they had
        return next((p for p in variant.passes if p.label == "cold"), None)
    return variant.best(label)


def _eps(p: PassResult | None) -> float | None:
    return p.eps if p is not None else None


def _cpu(p: PassResult | None) -> float | None:
    return p.cpu_s_per_1k if p is not None else None


def ratios(run: RunResult) -> dict[str, float | None]:
    warm, cold = _pass(run, "streamscore_1p", "warm"), _pass(run, "streamscore_1p", "cold")
    warm2 = _pass(run, "streamscore_2p", "warm")
    relay, relay2 = _pass(run, "relay"), _pass(run, "relay_2p")
    cached, naive = _pass(run, "cached"), _pass(run, "naive")
    return {
        "warm_over_cached": _ratio(_eps(warm), _eps(cached), 1),
        "cold_over_cached": _ratio(_eps(cold), _eps(cached), 1),
        "cached_cpu_over_warm_cpu": _ratio(_cpu(cached), _cpu(warm), 1),
        "warm_over_relay": _ratio(_eps(warm), _eps(relay), 3),
        "warm_2p_over_relay_2p": _ratio(_eps(warm2), _eps(relay2), 3),
        "cold_over_warm": _ratio(_eps(cold), _eps(warm), 3),
        "warm_cpu_over_relay_cpu": _ratio(_cpu(warm), _cpu(relay), 2),
        "warm_over_naive": _ratio(_eps(warm), _eps(naive), 0),
        "cold_over_naive": _ratio(_eps(cold), _eps(naive), 0),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def targets(run: RunResult) -> list[Target]:
    r, out = run.ratios, []
    warm, cold = _pass(run, "streamscore_1p", "warm"), _pass(run, "streamscore_1p", "cold")
    cached = _pass(run, "cached")
    server = run.servers.mongo_server
    if warm and cold and r["cold_over_warm"] is not None:
        share = cold.scorer.db_wait_share if cold.scorer else None
        out.append(
            Target(
                f"cold ≥ 50 % of warm throughput ({server})",
                f"{_pct(r['cold_over_warm'])}: cold {cold.eps:,.0f} vs warm {warm.eps:,.0f} "
                f"ev/s; cold DB wait share {_pct(share)}",
                r["cold_over_warm"] >= 0.5,
                ISSUE_12,
            )
        )
    for key, ratio_key, relay_key in (
        ("1 process", "warm_over_relay", "relay"),
        ("2 processes", "warm_2p_over_relay_2p", "relay_2p"),
    ):
        value = r[ratio_key]
        if value is not None:
            relay = _eps(_pass(run, relay_key)) or 0.0
            measured = f"{_pct(value)} (relay {key}: {relay:,.0f} ev/s)"
            out.append(
                Target(f"{key} warm ≥ 85 % of relay, {key}", measured, value >= 0.85, ISSUE_14)
            )
    if warm and cached and r["warm_over_cached"] is not None:
        cpu_x = r["cached_cpu_over_warm_cpu"]
        out.append(
            Target(
                "≥ 3x per-message cached in throughput, ≤ 1/3 of its CPU per event",
                f"{r['warm_over_cached']}x ({warm.eps:,.0f} vs {cached.eps:,.0f} ev/s); its CPU "
                f"per event is {cpu_x}x ours",
                r["warm_over_cached"] >= 3 and cpu_x is not None and cpu_x >= 3,
                ISSUE_14,
            )
        )
    if (cpu := r["warm_cpu_over_relay_cpu"]) is not None:
        out.append(Target("CPU per event ≤ 2.5x the relay's", f"{cpu}x", cpu <= 2.5, ISSUE_14))
    if warm is not None and (lag := warm.loop_lag_ms.p99) is not None:
        out.append(
            Target("scorer loop lag p99 ≤ 2.5 ms at full load", f"{lag} ms", lag <= 2.5, ISSUE_14)
        )
    scorer_v, relay_v = run.variants.get("streamscore_1p"), run.variants.get("relay")
    at50 = scorer_v.at(0.5) if scorer_v else None
    relay50 = relay_v.at(0.5) if relay_v else None
    if at50 and relay50 and at50.latency_ms.p99 is not None:
        out.append(
            Target(
                "e2e p99 at 50 % of max ≤ relay's p99 at the same rate + 15 ms",
                f"{at50.latency_ms.p99} ms at {at50.achieved_send_eps:,.0f} ev/s; relay "
                f"{relay50.latency_ms.p99} ms at its own 50 % ({relay50.achieved_send_eps:,.0f} "
                "ev/s), not the same rate: not judged",
                None,
                ISSUE_14,
            )
        )
    side = run.sidecar.servers.get("streamscore") if run.sidecar else None
    s64 = side.at(64) if side else None
    if s64 is not None and s64.latency_ms.p99 is not None:
        lag64 = s64.loop_lag_p99_ms
        out.append(
            Target(
                "sidecar at c=64: loop lag p99 ≤ 5 ms, p99 latency ≤ 15 ms",
                f"loop lag p99 ≤ {lag64} ms (bucket bound), p99 {s64.latency_ms.p99} ms, "
                f"{s64.rps:,.0f} req/s",
                lag64 is not None and lag64 <= 5 and s64.latency_ms.p99 <= 15,
                ISSUE_14,
            )
        )
    rss = [v.peak_rss_mb for k, v in run.variants.items() if k.startswith("streamscore")]
    if rss:
        out.append(
            Target("scorer peak RSS ≤ 300 MB", f"{max(rss):,.0f} MB", max(rss) <= 300, DESIGN)
        )
    return out
