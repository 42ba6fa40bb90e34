"""Alert rules: valid for promtool, unit tests pass, the Operator manifest holds the same groups."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).parents[2] / "manifests" / "rules"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (Debian package prometheus; .ci/run installs it)",
)


def test_prometheusrule_manifest_matches_plain_rules():
    plain = yaml.safe_load((RULES_DIR / "aicrush.rules.yaml").read_text())
    manifest = yaml.safe_load((RULES_DIR / "prometheusrule.yaml").read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == plain
    alerts = {r["alert"] for g in plain["groups"] for r in g["rules"]}
    assert {
        "AicrushSustainedDrift",
        "AicrushCanaryHighServerErrorRate",
        "AicrushHighErrorRate",
        "AicrushHighLatencyP99",
        "AicrushNoTraffic",
    } <= alerts


@needs_promtool
def test_promtool_check_rules():
    out = subprocess.run(
        ["promtool", "check", "rules", str(RULES_DIR / "aicrush.rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests():
    tests = sorted(str(p) for p in (RULES_DIR / "tests").glob("*.yaml"))
    assert tests
    out = subprocess.run(
        ["promtool", "test", "rules", *tests], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
