"""deploy/: the Prometheus rules and the Grafana dashboard parse, and every metric they use
is one depositd exports (a renamed metric would silently blind an alert)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from depositd import metrics
from depositd.services.alerts import RULES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_METRIC = re.compile(r"\bdepositd_[a-z_]+")


def exported() -> set[str]:
    """Every sample name depositd's /metrics can contain."""
    figures = metrics.DatabaseFigures(deposits_by_status={"credited": 1})
    chains = [metrics.ChainGauge("anvil", 10, 9, 1, True)]
    snapshot = metrics.exposition(figures, chains).decode()
    names = {line.split("{")[0].split(" ")[0] for line in snapshot.splitlines()
             if line and not line.startswith("#")}  # fmt: skip
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum")}
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_prometheus_rules_use_only_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    (group,) = rules["groups"]
    used = {name for rule in group["rules"] for name in _METRIC.findall(rule["expr"])}
    assert used
    assert used <= exported(), used - exported()
    # one rule per condition the service evaluates itself (and an outbox backlog rule)
    assert len(group["rules"]) == len(RULES) + 1
    assert all(rule["annotations"]["summary"] for rule in group["rules"])


def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert used <= exported(), used - exported()
    # the charts the issue names: deposits per minute, delivery latency, outbox depth
    assert {"depositd_deposit_transitions_total", "depositd_delivery_latency_seconds_bucket",
            "depositd_outbox_depth"} <= used  # fmt: skip
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
