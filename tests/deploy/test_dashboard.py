"""The Grafana dashboard and Prometheus config refer only to metrics the product exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from scoring.metrics import ScoringMetrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "infra" / "monitoring"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


OWNERS = {
    "stream": ROOT / "streams" / "metrics.py",
    "sidecar": ROOT / "api" / "metrics.py",
    "scoring": ROOT / "scoring" / "metrics.py",
}
"""Who exports each family: the stream and the sidecar their transport's, both doors the
scoring service's collector."""


def names_of(source: Path) -> set[str]:
    if source == OWNERS["scoring"]:  # names built from a prefix: ask the collector itself
        return {family.name for family in ScoringMetrics().describe()}
    return set(re.findall(r'"(streamscore_[a-z0-9_]+)"', source.read_text()))


def exported_metric_names() -> set[str]:
    return set().union(*(names_of(source) for source in OWNERS.values()))


def dashboard_exprs() -> list[list[str]]:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "streamscore.json").read_text())
    return [[t["expr"] for t in p["targets"]] for p in dashboard["panels"]]


def used_names(expr: str) -> set[str]:
    return {base_name(n) for n in re.findall(r"streamscore_[a-z0-9_]+", expr)}


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_dashboard_query_uses_an_exported_metric() -> None:
    panels = dashboard_exprs()
    used = {name for exprs in panels for e in exprs for name in used_names(e)}
    assert len(panels) >= 8
    assert used, "the dashboard queries nothing"
    missing = used - exported_metric_names()
    assert not missing, f"dashboard uses metrics nobody exports: {sorted(missing)}"


def test_no_two_families_of_different_meaning_are_added_up() -> None:
    """The three owners' families never share a name; a panel draws one owner's families; a
    sum of a family both doors export keeps the doors apart (``by (..., job, ...)``)."""
    owned = {owner: names_of(source) for owner, source in OWNERS.items()}
    owners = list(owned)
    for i, first in enumerate(owners):
        for second in owners[i + 1 :]:
            assert not owned[first] & owned[second], (first, second)
    for exprs in dashboard_exprs():
        names = {name for e in exprs for name in used_names(e)}
        assert sum(1 for family in owned.values() if names & family) == 1, exprs
        for expr in exprs:
            if used_names(expr) & owned["scoring"] and "sum" in expr:
                groups = re.findall(r"sum by \(([^)]*)\)", expr)
                assert groups, expr
                assert all("job" in g.replace(" ", "").split(",") for g in groups), expr


def test_prometheus_scrapes_scorer_and_sidecar_and_compose_wires_the_profile() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {"scorer:9464", "api:8000"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert ":" in services[name]["image"]
        assert not services[name]["image"].endswith(":latest")
    scorer_env = services["scorer"]["environment"]
    assert scorer_env["STREAMSCORE_STREAM__METRICS_HOST"] == "0.0.0.0"
    assert str(scorer_env["STREAMSCORE_STREAM__METRICS_PORT"]) == "9464"
