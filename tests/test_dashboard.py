"""The Grafana dashboard and Prometheus config refer only to metrics the product exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "infra" / "monitoring"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for source in (ROOT / "streams" / "metrics.py", ROOT / "api" / "metrics.py"):
        names |= set(re.findall(r'"(streamscore_[a-z0-9_]+)"', source.read_text()))
    return names


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_dashboard_query_uses_an_exported_metric() -> None:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "streamscore.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {base_name(n) for e in exprs for n in re.findall(r"streamscore_[a-z0-9_]+", e)}
    assert len(dashboard["panels"]) >= 8
    assert used, "the dashboard queries nothing"
    missing = used - exported_metric_names()
    assert not missing, f"dashboard uses metrics nobody exports: {sorted(missing)}"


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
