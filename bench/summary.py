"""Ratios between variants, their medians over the repetitions, and the targets.

Every ratio is taken within one repetition (a variant against the baseline measured in the
same repetition), then the median and range of those ratios is reported; every target is
judged on medians.
"""

from __future__ import annotations

from bench.results import PassResult, RunResult, Spread, Target, VariantResult, Variants

ISSUE_12 = "issue 12"
ISSUE_14 = "issue 14"
ROUND_2 = "Performance round 2"
LIBRDKAFKA = "A librdkafka client backend"
DESIGN = "design"
DASH = "\u2013"

SCORER_KEYS = (
    "streamscore_1p",
    "streamscore_2p",
    "streamscore_confluent_1p",
    "streamscore_confluent_2p",
    "streamscore_lightgbm_1p",
)
SCORER_MATCH = {"relay": "streamscore_1p", "relay_confluent": "streamscore_confluent_1p"}
"""Each 1-process relay is also offered its scorer's 50 % rate (the same offered rate)."""


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _pass(variants: Variants, key: str, label: str | None = None) -> PassResult | None:
    variant = variants.get(key)
    if variant is None:
        return None
    if label == "cold":  # bounded drains count too: the rate over the time they had
        return next((p for p in variant.passes if p.label == "cold"), None)
    return variant.best(label)


def _eps(p: PassResult | None) -> float | None:
    return p.eps if p is not None else None


def _cpu(p: PassResult | None) -> float | None:
    return p.cpu_s_per_1k if p is not None else None


def fastest_relay(variants: Variants, processes: int) -> tuple[str, PassResult] | None:
    """The fastest relay with ``processes`` processes in this repetition (either client)."""
    keys = ("relay", "relay_confluent") if processes == 1 else ("relay_2p", "relay_confluent_2p")
    found = [(k, p) for k in keys if (p := _pass(variants, k)) is not None]
    return max(found, key=lambda x: x[1].eps) if found else None


def _p99_over_relay(variants: Variants, scorer: str, relay: str) -> float | None:
    """The scorer's e2e p99 at 50 % of its max minus the relay's p99 at the same rate."""
    s, r = variants.get(scorer), variants.get(relay)
    at50 = s.at(0.5) if s else None
    same = r.matching(f"{scorer}@50%") if r else None
    if at50 is None or same is None:
        return None
    if at50.latency_ms.p99 is None or same.latency_ms.p99 is None:
        return None
    return round(at50.latency_ms.p99 - same.latency_ms.p99, 1)


def ratios(variants: Variants) -> dict[str, float | None]:
    """The ratios of one repetition."""
    warm, cold = (
        _pass(variants, "streamscore_1p", "warm"),
        _pass(variants, "streamscore_1p", "cold"),
    )
    warm2 = _pass(variants, "streamscore_2p", "warm")
    cwarm = _pass(variants, "streamscore_confluent_1p", "warm")
    cwarm2 = _pass(variants, "streamscore_confluent_2p", "warm")
    lwarm = _pass(variants, "streamscore_lightgbm_1p", "warm")
    relay, relay2 = _pass(variants, "relay"), _pass(variants, "relay_2p")
    crelay, crelay2 = _pass(variants, "relay_confluent"), _pass(variants, "relay_confluent_2p")
    fast, fast2 = fastest_relay(variants, 1), fastest_relay(variants, 2)
    cached, naive = _pass(variants, "cached"), _pass(variants, "naive")
    return {
        "warm_over_cached": _ratio(_eps(warm), _eps(cached), 1),
        "cold_over_cached": _ratio(_eps(cold), _eps(cached), 1),
        "cached_cpu_over_warm_cpu": _ratio(_cpu(cached), _cpu(warm), 1),
        "warm_over_relay": _ratio(_eps(warm), _eps(relay)),
        "warm_2p_over_relay_2p": _ratio(_eps(warm2), _eps(relay2)),
        "warm_over_fastest_relay": _ratio(_eps(warm), fast[1].eps if fast else None),
        "warm_2p_over_fastest_relay_2p": _ratio(_eps(warm2), fast2[1].eps if fast2 else None),
        "cold_over_warm": _ratio(_eps(cold), _eps(warm)),
        "warm_cpu_over_relay_cpu": _ratio(_cpu(warm), _cpu(relay), 2),
        "warm_over_naive": _ratio(_eps(warm), _eps(naive), 0),
        "cold_over_naive": _ratio(_eps(cold), _eps(naive), 0),
        "relay_confluent_over_relay": _ratio(_eps(crelay), _eps(relay)),
        "relay_confluent_2p_over_relay_2p": _ratio(_eps(crelay2), _eps(relay2)),
        "confluent_warm_over_warm": _ratio(_eps(cwarm), _eps(warm)),
        "confluent_warm_2p_over_warm_2p": _ratio(_eps(cwarm2), _eps(warm2)),
        "confluent_warm_over_relay_confluent": _ratio(_eps(cwarm), _eps(crelay)),
        "confluent_warm_2p_over_relay_confluent_2p": _ratio(_eps(cwarm2), _eps(crelay2)),
        "confluent_warm_over_fastest_relay": _ratio(_eps(cwarm), fast[1].eps if fast else None),
        "confluent_cpu_over_warm_cpu": _ratio(_cpu(cwarm), _cpu(warm), 2),
        "confluent_cpu_over_relay_confluent_cpu": _ratio(_cpu(cwarm), _cpu(crelay), 2),
        "lightgbm_warm_over_warm": _ratio(_eps(lwarm), _eps(warm)),
        "lightgbm_warm_over_relay": _ratio(_eps(lwarm), _eps(relay)),
        "lightgbm_warm_over_fastest_relay": _ratio(_eps(lwarm), fast[1].eps if fast else None),
        "lightgbm_cpu_over_relay_cpu": _ratio(_cpu(lwarm), _cpu(relay), 2),
        "lightgbm_cpu_over_warm_cpu": _ratio(_cpu(lwarm), _cpu(warm), 2),
        "p99_at_50_minus_relay_p99_ms": _p99_over_relay(variants, "streamscore_1p", "relay"),
        "confluent_p99_at_50_minus_relay_confluent_p99_ms": _p99_over_relay(
            variants, "streamscore_confluent_1p", "relay_confluent"
        ),
    }


def figures(variant: VariantResult) -> dict[str, float | None]:
    """The figures of one variant in one repetition that get a median: per pass (``warm.eps``,
    ``warm.cpu_s_per_1k``, ...), e2e latency at 50 % of its max, peak RSS."""
    out: dict[str, float | None] = {}
    for p in variant.passes:
        out[f"{p.label}.eps"] = p.eps if p.complete or p.label == "cold" else None
        out[f"{p.label}.cpu_s_per_1k"] = p.cpu_s_per_1k
        out[f"{p.label}.loop_lag_p99_ms"] = p.loop_lag_ms.p99
        if p.scorer is not None:
            out[f"{p.label}.db_wait_share"] = p.scorer.db_wait_share
            out[f"{p.label}.cache_hit_ratio"] = p.scorer.cache_hit_ratio
    if (at50 := variant.at(0.5)) is not None:
        out["lat50.offered_eps"] = at50.offered_eps
        out["lat50.p50_ms"] = at50.latency_ms.p50
        out["lat50.p99_ms"] = at50.latency_ms.p99
    for x in variant.latency:
        if x.matches:
            out[f"at {x.matches}.p99_ms"] = x.latency_ms.p99
            out[f"at {x.matches}.offered_eps"] = x.offered_eps
    out["peak_rss_mb"] = variant.peak_rss_mb or None
    return out


def medians(repetitions: list[Variants]) -> dict[str, dict[str, Spread]]:
    keys = list(dict.fromkeys(k for rep in repetitions for k in rep))
    out: dict[str, dict[str, Spread]] = {}
    for key in keys:
        per_run = [figures(rep[key]) for rep in repetitions if key in rep]
        names = list(dict.fromkeys(n for f in per_run for n in f))
        spreads = {n: Spread.of([f.get(n) for f in per_run]) for n in names}
        out[key] = {n: s for n, s in spreads.items() if s is not None}
    return out


def ratio_spreads(by_run: list[dict[str, float | None]]) -> dict[str, Spread]:
    names = list(dict.fromkeys(n for r in by_run for n in r))
    spreads = {n: Spread.of([r.get(n) for r in by_run]) for n in names}
    return {n: s for n, s in spreads.items() if s is not None}


def fmt(s: Spread | None, digits: int = 0, scale: float = 1.0, suffix: str = "") -> str:
    """``median [min-max]``, with an en dash (just the value for one run)."""
    if s is None:
        return "-"
    m, lo, hi = (f"{v * scale:,.{digits}f}{suffix}" for v in (s.median, s.min, s.max))
    return m if len(s.values) == 1 else f"{m} [{lo}{DASH}{hi}]"


def pct(s: Spread | None) -> str:
    return fmt(s, 0, 100, " %")


def targets(run: RunResult) -> list[Target]:
    r, m, out = run.ratios, run.medians, []

    def fig(key: str, name: str) -> Spread | None:
        return m.get(key, {}).get(name)

    def relay_text(processes: int) -> str:
        suffix = "" if processes == 1 else "_2p"
        return ", ".join(
            f"{label} {fmt(fig(k, 'drain.eps'))} ev/s"
            for k, label in (
                (f"relay{suffix}", "aiokafka"),
                (f"relay_confluent{suffix}", "librdkafka"),
            )
            if fig(k, "drain.eps")
        )

    server = run.servers.mongo_server
    if (cw := r.get("cold_over_warm")) is not None:
        out.append(
            Target(
                f"cold ≥ 50 % of warm throughput ({server})",
                f"{pct(cw)}: cold {fmt(fig('streamscore_1p', 'cold.eps'))} vs warm "
                f"{fmt(fig('streamscore_1p', 'warm.eps'))} ev/s; cold DB wait share "
                f"{pct(fig('streamscore_1p', 'cold.db_wait_share'))}",
                cw.median >= 0.5,
                ISSUE_12,
            )
        )
    for processes, fast_key, own_key in (
        (1, "warm_over_fastest_relay", "warm_over_relay"),
        (2, "warm_2p_over_fastest_relay_2p", "warm_2p_over_relay_2p"),
    ):
        if (fast := r.get(fast_key)) is not None:
            n = "1 process" if processes == 1 else "2 processes"
            out.append(
                Target(
                    f"{n} warm ≥ 85 % of the fastest relay, {n}",
                    f"{pct(fast)} of the fastest; {pct(r.get(own_key))} of the aiokafka relay "
                    f"({relay_text(processes)})",
                    fast.median >= 0.85,
                    ISSUE_14,
                )
            )
    if (wc := r.get("warm_over_cached")) is not None:
        cpu_x = r.get("cached_cpu_over_warm_cpu")
        out.append(
            Target(
                "≥ 3x per-message cached in throughput, ≤ 1/3 of its CPU per event",
                f"{fmt(wc, 1, suffix='x')}; its CPU per event is {fmt(cpu_x, 1, suffix='x')} ours",
                wc.median >= 3 and cpu_x is not None and cpu_x.median >= 3,
                ISSUE_14,
            )
        )
    if (cpu := r.get("warm_cpu_over_relay_cpu")) is not None:
        out.append(
            Target(
                "CPU per event ≤ 2.5x the relay's (same client)",
                f"{fmt(cpu, 2, suffix='x')} ({fmt(fig('streamscore_1p', 'warm.cpu_s_per_1k'), 3)}"
                f" vs {fmt(fig('relay', 'drain.cpu_s_per_1k'), 3)} CPU s / 1k events)",
                cpu.median <= 2.5,
                ISSUE_14,
            )
        )
    if (diff := r.get("p99_at_50_minus_relay_p99_ms")) is not None:
        out.append(
            Target(
                "e2e p99 at 50 % of max ≤ the relay's p99 at the same offered rate + 15 ms",
                f"ours {fmt(fig('streamscore_1p', 'lat50.p99_ms'))} ms, the relay's "
                f"{fmt(fig('relay', 'at streamscore_1p@50%.p99_ms'))} ms at "
                f"{fmt(fig('streamscore_1p', 'lat50.offered_eps'))} ev/s: "
                f"{fmt(diff, 1, suffix=' ms')} more",
                diff.median <= 15,
                ISSUE_14,
            )
        )
    out += lightgbm_targets(r, fig("streamscore_lightgbm_1p", "warm.loop_lag_p99_ms"))
    if (lag := fig("streamscore_1p", "warm.loop_lag_p99_ms")) is not None:
        out.append(
            Target(
                "scorer loop lag p99 ≤ 2.5 ms at full load (warm drain)",
                f"{fmt(lag, 1, suffix=' ms')}",
                lag.median <= 2.5,
                ISSUE_14,
            )
        )
    out += steady_targets(run)
    out += librdkafka_targets(run)
    side = run.sidecar.servers.get("streamscore") if run.sidecar else None
    s64 = side.at(64) if side else None
    if s64 is not None and s64.latency_ms.p99 is not None:
        lag64 = s64.loop_lag_p99_ms
        out.append(
            Target(
                "sidecar at c=64: loop lag p99 ≤ 5 ms, p99 latency ≤ 15 ms (one run)",
                f"loop lag p99 ≤ {lag64} ms (bucket bound), p99 {s64.latency_ms.p99} ms, "
                f"{s64.rps:,.0f} req/s",
                lag64 is not None and lag64 <= 5 and s64.latency_ms.p99 <= 15,
                ISSUE_14,
            )
        )
    rss = [
        s.median
        for k, f in m.items()
        if k.startswith("streamscore") and (s := f.get("peak_rss_mb"))
    ]
    if rss:
        out.append(
            Target("scorer peak RSS ≤ 300 MB", f"{max(rss):,.0f} MB", max(rss) <= 300, DESIGN)
        )
    return out


def lightgbm_targets(r: dict[str, Spread], lag: Spread | None) -> list[Target]:
    """Issue 14's per-process targets again for the scorer on the LightGBM backend
    (``STREAMSCORE_MODEL__BACKEND=lightgbm``, what ``auto`` runs without a C compiler); the
    default backend's lines are the verdict."""
    out: list[Target] = []
    named = "LightGBM backend"
    if (fast := r.get("lightgbm_warm_over_fastest_relay")) is not None:
        out.append(
            Target(
                f"{named}: 1 process warm ≥ 85 % of the fastest relay, 1 process",
                f"{pct(fast)} of the fastest; {pct(r.get('lightgbm_warm_over_relay'))} of the "
                f"aiokafka relay; {fmt(r.get('lightgbm_warm_over_warm'), 2, suffix='x')} the "
                "default backend's throughput",
                fast.median >= 0.85,
                ISSUE_14,
            )
        )
    if (cpu := r.get("lightgbm_cpu_over_relay_cpu")) is not None:
        out.append(
            Target(
                f"{named}: CPU per event ≤ 2.5x the relay's (same client)",
                f"{fmt(cpu, 2, suffix='x')} "
                f"({fmt(r.get('lightgbm_cpu_over_warm_cpu'), 2, suffix='x')} the default "
                "backend's CPU per event)",
                cpu.median <= 2.5,
                ISSUE_14,
            )
        )
    if lag is not None:
        out.append(
            Target(
                f"{named}: scorer loop lag p99 ≤ 2.5 ms at full load (warm drain)",
                fmt(lag, 1, suffix=" ms"),
                lag.median <= 2.5,
                ISSUE_14,
            )
        )
    return out


def steady_throughput(run: RunResult) -> tuple[float, float] | None:
    """(saturating steady ev/s, its share of the 1-process warm drain), when both exist."""
    st = run.steady
    if st is None or not st.warm_reference_eps:
        return None
    sat = next((p for p in st.passes if p.label == "saturating"), None)
    if sat is None or sat.steady is None:
        return None
    return sat.steady.eps, sat.steady.eps / st.warm_reference_eps


def steady_targets(run: RunResult) -> list[Target]:
    st, found = run.steady, steady_throughput(run)
    if st is None or found is None:
        return []
    eps, share = found
    sat = next(p for p in st.passes if p.label == "saturating")
    fixed = next((p for p in st.passes if p.label == "fixed rate"), None)
    kept = ""
    if fixed is not None and fixed.steady is not None and fixed.offered_eps:
        kept = (
            f"; at a fixed {fixed.offered_eps:,.0f} ev/s it kept up "
            f"({fixed.steady.eps:,.0f} ev/s scored, p99 {fixed.steady.latency_ms.p99} ms)"
        )
    dry = " (the backlog ran out: not saturated to the end)" if sat.ran_dry else ""
    return [
        Target(
            f"steady state (≥ 3 TTLs of {st.ttl_s:g} s, Zipf {st.zipf_s}) ≥ 90 % of the warm "
            "drain (one run)",
            f"{share:.0%}: {eps:,.0f} ev/s saturating after the first TTL against the warm "
            f"drain's {st.warm_reference_eps:,.0f} (median){dry}{kept}",
            share >= 0.9 and not sat.ran_dry,
            ROUND_2,
        )
    ]


def librdkafka_targets(run: RunResult) -> list[Target]:
    r, out = run.ratios, []
    variant_runs = [
        rep["streamscore_confluent_1p"]
        for rep in run.repetitions
        if "streamscore_confluent_1p" in rep
    ]
    if variant_runs and all(v.error for v in variant_runs):
        out.append(
            Target(
                "streamscore on librdkafka: measured",
                f"failed: {variant_runs[0].error[:300]}",
                False,
                LIBRDKAFKA,
            )
        )
        return out
    if (x := r.get("confluent_warm_over_warm")) is not None:
        out.append(
            Target(
                "streamscore on librdkafka ≥ 1.5x streamscore on aiokafka (1 process, warm)",
                f"{fmt(x, 2, suffix='x')}",
                x.median >= 1.5,
                LIBRDKAFKA,
            )
        )
    if (x := r.get("confluent_warm_over_relay_confluent")) is not None:
        out.append(
            Target(
                "streamscore on librdkafka ≥ 50 % of the librdkafka relay (1 process)",
                f"{pct(x)}",
                x.median >= 0.5,
                LIBRDKAFKA,
            )
        )
    if (x := r.get("confluent_cpu_over_warm_cpu")) is not None:
        out.append(
            Target(
                "streamscore on librdkafka: CPU per event ≤ half of streamscore on aiokafka",
                f"{fmt(x, 2, suffix='x')}",
                x.median <= 0.5,
                LIBRDKAFKA,
            )
        )
    return out
