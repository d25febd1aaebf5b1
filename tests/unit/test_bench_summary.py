"""The bench's arithmetic: medians and ranges over repetitions, ratios taken within each
repetition, the skewed entity mix of the steady-state phase. (No measured figure is asserted.)"""

from __future__ import annotations

import json

from bench.kafka_probe import event_templates
from bench.results import (
    Machine,
    PassResult,
    Quantiles,
    RunResult,
    Servers,
    Spread,
    VariantResult,
    Variants,
)
from bench.steady import zipf_templates
from bench.summary import fmt, medians, ratio_spreads, ratios, targets


def drained(eps: float, cpu: float, label: str = "drain") -> PassResult:
    return PassResult(label, 1000, 1000 / eps, eps, True, 1.0, cpu, Quantiles())


def repetition(relay: float, warm: float, confluent_relay: float) -> Variants:
    scorer = VariantResult("streamscore_1p", 1, [drained(warm / 2, 0.07, "cold")])
    scorer.passes.append(drained(warm, 0.06, "warm"))
    return {
        "relay": VariantResult("relay", 1, [drained(relay, 0.02)]),
        "relay_confluent": VariantResult("relay_confluent", 1, [drained(confluent_relay, 0.005)]),
        "streamscore_1p": scorer,
    }


def test_spread_is_median_min_max_and_skips_missing() -> None:
    s = Spread.of([3.0, None, 1.0, 2.0])
    assert s is not None
    assert (s.median, s.min, s.max, s.values) == (2.0, 1.0, 3.0, [3.0, 1.0, 2.0])
    assert Spread.of([None]) is None
    assert fmt(s) == "2 [1\u20133]"
    assert fmt(Spread.of([5.0])) == "5"


def test_ratios_are_taken_within_each_repetition_then_medianed() -> None:
    reps = [repetition(100, 60, 200), repetition(200, 50, 100), repetition(50, 40, 40)]
    by_run = [ratios(r) for r in reps]
    assert [r["warm_over_relay"] for r in by_run] == [0.6, 0.25, 0.8]
    # the fastest relay of each repetition, whichever client
    assert [r["warm_over_fastest_relay"] for r in by_run] == [0.3, 0.25, 0.8]
    spread = ratio_spreads(by_run)["warm_over_relay"]
    assert (spread.median, spread.min, spread.max) == (0.6, 0.25, 0.8)
    # not the ratio of the medians (50 / 100)
    warm = medians(reps)["streamscore_1p"]["warm.eps"]
    assert (warm.median, warm.min, warm.max) == (50.0, 40.0, 60.0)


def test_zipf_mix_is_skewed_and_keeps_features() -> None:
    templates = event_templates(2_000, seed=1)
    mix, distinct, hot_share = zipf_templates(templates, 20_000, 20_000, 1.1)
    assert len(mix) == 20_000
    assert hot_share > 0.4  # the 1 % hottest entities carry a large share
    assert distinct < 20_000
    unknown = sum(key.startswith(b"unknown-z") for key, _ in mix) / len(mix)
    assert 0.03 < unknown < 0.07
    first = json.loads(mix[0][1])
    assert first["entity_id"].encode() == mix[0][0]
    assert first["features"] == json.loads(templates[0][1])["features"]


def test_lightgbm_backend_ratios_and_targets_use_its_own_repetition() -> None:
    reps = [repetition(100, 60, 200), repetition(200, 50, 100), repetition(50, 40, 40)]
    for rep, (eps, cpu_s) in zip(reps, [(90, 0.04), (40, 0.05), (44, 0.06)], strict=True):
        rep["streamscore_lightgbm_1p"] = VariantResult(
            "streamscore_lightgbm_1p", 1, [drained(eps, cpu_s, "warm")]
        )
    by_run = [ratios(r) for r in reps]
    assert [r["lightgbm_warm_over_warm"] for r in by_run] == [1.5, 0.8, 1.1]
    assert [r["lightgbm_cpu_over_relay_cpu"] for r in by_run] == [2.0, 2.5, 3.0]
    assert [r["lightgbm_warm_over_fastest_relay"] for r in by_run] == [0.45, 0.2, 0.88]
    run = RunResult(
        "r",
        "now",
        {},
        Machine(2, "cpu", 1, "3.11", (0.0, 0.0, 0.0)),
        Servers("k", "4", "m", "mongo", "7", {}),
        repetitions=reps,
        medians=medians(reps),
        ratios=ratio_spreads(by_run),
    )
    found = {t.target: t for t in targets(run)}
    cpu = found["LightGBM backend: CPU per event ≤ 2.5x the relay's (same client)"]
    assert cpu.met
    assert cpu.measured.startswith("2.50x [2.00x")
    fast = found["LightGBM backend: 1 process warm ≥ 85 % of the fastest relay, 1 process"]
    assert not fast.met  # median 0.45
