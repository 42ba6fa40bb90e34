"""Sustained drift starts a retrain through the hook, at most once per interval, all recorded."""

from __future__ import annotations

import sys

from serving.monitor.drift import DriftResult
from serving.monitor.retrain import RetrainPolicy, RetrainTrigger, embedded_hook
from serving.monitor.state import MonitorState


def verdict(drift: bool) -> DriftResult:
    return DriftResult(
        n_rows=10, n_reference_rows=10, columns=(), share_drifted=float(drift), dataset_drift=drift
    )


def test_sustained_drift_triggers_once_per_interval(tmp_path):
    calls = []
    state = MonitorState(tmp_path)
    trigger = RetrainTrigger(
        lambda m, v, r: calls.append((m, v)) or "run-1",
        RetrainPolicy(sustained_windows=2, min_interval_s=3600),
        state,
    )
    t = 1_000_000.0
    assert trigger.observe("m", "1", verdict(True), now=t) == "none"
    assert trigger.observe("m", "1", verdict(False), now=t + 1) == "none"  # not sustained
    assert trigger.observe("m", "1", verdict(True), now=t + 2) == "none"
    assert trigger.observe("m", "1", verdict(True), now=t + 3) == "started"
    assert trigger.observe("m", "1", verdict(True), now=t + 4) == "none"
    assert trigger.observe("m", "1", verdict(True), now=t + 5) == "rate_limited"
    # A restarted monitor still knows the last start (rate limit across restarts).
    again = RetrainTrigger(lambda m, v, r: "run-2", RetrainPolicy(1, 3600), MonitorState(tmp_path))
    assert again.observe("m", "1", verdict(True), now=t + 60) == "rate_limited"
    assert again.observe("m", "1", verdict(True), now=t + 3700) == "started"
    assert calls == [("m", "1")]
    outcomes = [r["outcome"] for r in state.retrains()]
    assert outcomes == ["started", "rate_limited", "rate_limited", "started"]


def test_failing_hook_is_recorded_not_raised(tmp_path):
    def broken(m, v, r):
        raise ConnectionError("KFP endpoint unreachable")

    trigger = RetrainTrigger(broken, RetrainPolicy(1, 0), MonitorState(tmp_path))
    assert trigger.observe("m", "1", verdict(True)) == "failed"
    assert "unreachable" in trigger.state.retrains()[0]["detail"]


def test_embedded_hook_starts_a_subprocess(tmp_path):
    marker = tmp_path / "ran"
    hook = embedded_hook([sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"])
    detail = hook("m", "1", verdict(True))
    assert detail.startswith("pid ")
    import time

    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "ok"


def test_cluster_hook_submits_as_aicrush_submit_does():
    """A retrain run went to the cluster's default root (MinIO in a standalone install) and
    service account: the monitor passes --kfp-pipeline-root/-service-account/-namespace on."""
    from serving.monitor.retrain import cluster_hook

    made = []

    class Client:  # stands in for kfp.Client (no KFP backend here)
        def __init__(self, **kwargs):
            made.append(kwargs)

        def create_run_from_pipeline_package(self, package, **kwargs):
            made.append({"package": package, **kwargs})
            return type("Run", (), {"run_id": "r-9"})()

    hook = cluster_hook(
        "http://kfp",
        "training.yaml",
        pipeline_root="gs://b/pipeline-root",
        service_account="default-editor",
        namespace="aicrush-runs",
        client_factory=Client,
    )
    assert hook("m", "3", verdict(True)) == "kfp run r-9"
    assert made[0] == {"host": "http://kfp", "namespace": "aicrush-runs"}
    sent = made[1]
    assert sent["package"] == "training.yaml" and sent["pipeline_root"] == "gs://b/pipeline-root"
    assert (sent["service_account"], sent["namespace"]) == ("default-editor", "aicrush-runs")


def test_monitor_refuses_a_pipeline_root_without_a_bucket(tmp_path):
    import pytest
    import typer

    from serving.monitor.cli import build_monitor

    with pytest.raises(typer.BadParameter, match="--kfp-pipeline-root 'gs://'"):
        build_monitor(
            model="m",
            version="1",
            reference=str(tmp_path / "ref.parquet"),
            state_dir=tmp_path,
            retrain="cluster",
            kfp_host="http://kfp",
            pipeline_package="training.yaml",
            kfp_options={"pipeline_root": "gs://"},
        )


def test_monitor_checks_the_retrain_settings_at_start(tmp_path):
    """A missing or broken --pipeline-package, or --kfp-* without --retrain cluster, passed at
    start and showed up at the first retrain, hours later (or never)."""
    import pytest
    import typer

    from serving.monitor.cli import build_monitor

    def build(**kwargs):
        return build_monitor(
            model="m",
            version="1",
            reference=str(tmp_path / "ref.parquet"),
            state_dir=tmp_path,
            **kwargs,
        )

    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [\n")
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\n")
    for package, said in (
        (tmp_path / "none.yaml", "no such file"),
        (broken, "is not YAML"),
        (other, "not a compiled KFP pipeline"),
    ):
        with pytest.raises(typer.BadParameter, match=said):
            build(retrain="cluster", kfp_host="http://kfp", pipeline_package=str(package))
    with pytest.raises(typer.BadParameter, match="apply to --retrain cluster only"):
        build(kfp_options={"pipeline_root": "gs://b/p"})
