"""Small samples get "not enough data", offline and in windows, and no gauge claims a verdict;
``aicrush drift`` on plain texts (no predictions) compares features only."""

from __future__ import annotations

import json
import math

import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.monitor.app import create_app
from serving.monitor.cli import drift_command
from serving.monitor.drift import MIN_ROWS, DriftSettings, analyze_window
from serving.monitor.retrain import RetrainPolicy, RetrainTrigger
from tests.monitor.conftest import MODEL, VERSION, make_monitor
from tests.monitor.test_drift import gauge, send_through_events

app = typer.Typer()
app.command()(drift_command)


def test_below_the_minimum_there_is_no_verdict(split, reference):
    _, pool = split
    small = pool.iloc[: MIN_ROWS - 1]
    result = analyze_window(small, reference.frame)
    assert not result.enough_data and result.verdict == "not_enough_data"
    assert result.columns == () and math.isnan(result.share_drifted) and not result.dataset_drift
    assert result.to_dict()["share_drifted"] is None and result.to_dict()["dataset_drift"] is None
    enough = analyze_window(pool.iloc[:MIN_ROWS], reference.frame)
    assert enough.enough_data and enough.verdict in ("drift", "no_drift")
    assert analyze_window(small, reference.frame, DriftSettings(min_rows=10)).enough_data


def test_a_small_window_sets_no_drift_gauge_and_no_retrain_streak(tmp_path, split, reference):
    _, pool = split
    shifted = pool[pool["prediction"].isin(["JavaScript", "CSS"])]
    monitor = make_monitor(tmp_path / "state", reference, max_rows=40)
    calls = []
    monitor.retrain = RetrainTrigger(
        lambda *a: calls.append(a) or "started", RetrainPolicy(1, 0.0), monitor.state
    )
    try:
        send_through_events(monitor, shifted.iloc[:40])  # a real shift, but only 40 rows
        assert gauge(monitor, "aicrush_drift_windows_total", dataset_drift="not_enough_data") == 1
        assert gauge(monitor, "aicrush_drift_enough_data") == 0
        assert math.isnan(gauge(monitor, "aicrush_drift_dataset_drift"))
        assert math.isnan(gauge(monitor, "aicrush_drift_share_drifted_columns"))
        assert math.isnan(gauge(monitor, "aicrush_drift_column_drifted", column="prediction"))
        assert gauge(monitor, "aicrush_drift_window_rows") == 40
        assert calls == []
        [row] = monitor.state.results()
        assert row["verdict"] == "not_enough_data" and row["share_drifted"] is None
        # What a user reads over REST: neither drift nor no drift is claimed.
        [shown] = TestClient(create_app(monitor)).get("/reports").json()
        assert shown["verdict"] == "not_enough_data"
        assert shown["dataset_drift"] is None and shown["share_drifted"] is None
    finally:
        monitor.close()


def _plain_texts(path, texts) -> None:
    path.write_text("\n".join(t.replace("\n", " ")[:300] for t in texts) + "\n")


def test_drift_on_plain_texts_compares_features_only(tmp_path, split, reference):
    _, pool = split
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    inputs = tmp_path / "inputs.txt"
    _plain_texts(inputs, pool["text"].iloc[: MIN_ROWS + 50])
    out = tmp_path / "report.html"
    args = [str(inputs), "--reference", str(ref_path), "--model", MODEL, "--version", VERSION]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "comparing features only" in result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert "prediction" not in summary["settings"]["columns"]
    assert summary["verdict"] in ("drift", "no_drift") and out.is_file()
    assert summary["n_rows"] == MIN_ROWS + 50


def test_drift_on_too_few_texts_says_not_enough_data(tmp_path, split, reference):
    _, pool = split
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    inputs = tmp_path / "inputs.txt"
    _plain_texts(inputs, pool["text"].iloc[:20])
    out = tmp_path / "report.html"
    args = [str(inputs), "--reference", str(ref_path), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"not enough data: 20 requests vs {len(reference.frame)} reference rows" in result.output
    assert f"at least {MIN_ROWS}" in result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["verdict"] == "not_enough_data" and summary["dataset_drift"] is None
    assert not out.exists()
    assert CliRunner().invoke(app, [*args, "--fail-on-drift"]).exit_code == 3
