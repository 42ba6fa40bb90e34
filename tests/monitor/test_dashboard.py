"""The dashboard and the alert rules only use metrics that the code exports, in valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from serving.metrics import ServingMetrics
from serving.monitor.service import MonitorMetrics
from serving.payload_logger import PayloadLoggerMetrics

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "manifests" / "dashboards" / "aicrush-serving-drift.json"


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    ServingMetrics(registry)
    MonitorMetrics(registry)
    PayloadLoggerMetrics(registry)
    names = set()
    for family in registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((ROOT / "manifests" / "rules" / "aicrush.rules.yaml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_rules_use_exported_metrics():
    known = exported_names()
    used = {m for e in dashboard_exprs() + rule_exprs() for m in re.findall(r"aicrush_\w+", e)}
    assert used and used <= known, f"unknown metrics: {sorted(used - known)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_dashboard_queries_are_valid_promql(tmp_path):
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$model", "m").replace("$version", "1")
        for e in dashboard_exprs()
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
