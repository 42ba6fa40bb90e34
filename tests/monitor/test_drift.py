"""A real language-mix shift raises the drift gauge and the alert; reference-like traffic does not."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from serving.monitor.drift import analyze_window, build_report, report_share_drifted, save_report
from serving.monitor.reference import Reference
from serving.payload_logger import PayloadLogger
from tests.monitor.conftest import MODEL, VERSION, make_monitor

RULES = Path(__file__).parents[2] / "manifests" / "rules" / "aicrush.rules.yaml"


def send_through_events(monitor, rows: pd.DataFrame, batch: int = 20) -> None:
    """Feed rows as the payload logger would: request + response CloudEvents per batch."""
    logger = PayloadLogger.__new__(PayloadLogger)  # only its event encoding, no thread
    logger.source, logger.namespace = "http://localhost:8080/", "default"
    logger.endpoint, logger.component = "default", "predictor"
    for start in range(0, len(rows), batch):
        chunk = rows.iloc[start : start + batch]
        outputs = [{"label": p, "score": 0.9} for p in chunk["prediction"]]
        for headers, body in logger.events(
            f"req-{start}", MODEL, VERSION, chunk["text"].tolist(), outputs
        ):
            monitor.ingest(headers, body)


def gauge(monitor, name: str, **labels: str) -> float | None:
    return monitor.registry.get_sample_value(name, {"model": MODEL, "version": VERSION, **labels})


def test_language_shift_raises_drift_gauge_and_alert(tmp_path, split, reference: Reference):
    _, pool = split
    # Three windows of it: the alert needs 3 drifted windows in a row (one drifted window holds
    # the flag until the next closes, which is not sustained drift).
    shifted = pool[pool["prediction"].isin(["JavaScript", "CSS"])].sample(
        1200, replace=True, random_state=0
    )
    monitor = make_monitor(tmp_path / "state", reference, max_rows=400)
    try:
        send_through_events(monitor, shifted)
        assert gauge(monitor, "aicrush_drift_windows_total", dataset_drift="true") == 3
        flag = gauge(monitor, "aicrush_drift_dataset_drift")
        assert flag == 1
        in_a_row = gauge(monitor, "aicrush_drift_consecutive_drifted_windows")
        assert in_a_row == 3
        assert gauge(monitor, "aicrush_drift_last_window_timestamp_seconds") is not None
        share = gauge(monitor, "aicrush_drift_share_drifted_columns")
        assert share is not None and share >= 0.75, share
        assert gauge(monitor, "aicrush_drift_column_drifted", column="prediction") == 1
        assert gauge(monitor, "aicrush_drift_window_rows") == 400
        info = gauge(
            monitor, "aicrush_drift_reference_info", sha256=reference.sha256, source="test-corpus"
        )
        assert info == 1
    finally:
        monitor.close()

    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus): alert check skipped")
    # The run of drifted windows the monitor exported, its last window just closed: the alert
    # rule must fire (promtool's clock starts at 0, so the timestamp series is that clock).
    test_file = tmp_path / "shift.test.yaml"
    test_file.write_text(
        textwrap.dedent(f"""\
        rule_files: [{RULES}]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'aicrush_drift_consecutive_drifted_windows{{model="{MODEL}",version="{VERSION}"}}'
                values: "{int(in_a_row)}x25"
              - series: 'aicrush_drift_last_window_timestamp_seconds{{model="{MODEL}",version="{VERSION}"}}'
                values: "0+60x25"
            alert_rule_test:
              - eval_time: 5m
                alertname: AicrushSustainedDrift
                exp_alerts:
                  - exp_labels: {{severity: warning, model: {MODEL}, version: "{VERSION}"}}
                    exp_annotations:
                      summary: "Input drift on {MODEL} v{VERSION}: {int(in_a_row)} drifted windows in a row"
                      description: >-
                        The last drift windows of {MODEL} v{VERSION} drifted from the training
                        reference. Open the monitor's /reports; retraining starts if enabled.
        """)
    )
    out = subprocess.run(
        ["promtool", "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_reference_like_traffic_rarely_alarms(split, reference: Reference):
    """False-alarm rate over many windows sampled like the reference (the benchmark runs 200)."""
    _, pool = split
    n_windows = 15
    alarms = 0
    shares = []
    for i in range(n_windows):
        window = pool.sample(500, replace=True, random_state=100 + i)
        result = analyze_window(window, reference.frame)
        alarms += result.dataset_drift
        shares.append(result.share_drifted)
    rate = alarms / n_windows
    print(f"false alarms {alarms}/{n_windows}; max share {max(shares):.2f}")
    assert rate == 0, shares
    assert max(shares) < 0.35, shares  # a margin below drift_share 0.5


def test_fast_path_matches_evidently_preset(tmp_path, split, reference: Reference):
    _, pool = split
    window = pool[pool["prediction"].isin(["JavaScript", "CSS"])].sample(
        200, replace=True, random_state=3
    )
    result = analyze_window(window, reference.frame)
    snapshot = build_report(window, reference.frame)
    assert report_share_drifted(snapshot) == pytest.approx(result.share_drifted)
    where = save_report(snapshot, str(tmp_path / "r" / "drift.html"))
    assert "<html" in Path(where).read_text()[:2000].lower()


def test_a_gs_report_goes_through_the_shared_storage_client(monkeypatch: pytest.MonkeyPatch):
    """The one client factory (aicrush.gcs.storage_client: the emulator's anonymous client,
    ADC with missing credentials as a CredentialsError) uploads the report too."""
    import aicrush.gcs

    uploads: list[tuple[str, str, str, str]] = []

    class Blob:
        def __init__(self, bucket: str, name: str) -> None:
            self.bucket, self.name = bucket, name

        def upload_from_string(self, data: str, content_type: str) -> None:
            uploads.append((self.bucket, self.name, content_type, data))

    class Client:
        def bucket(self, name: str):
            return type("Bucket", (), {"blob": lambda _, blob: Blob(name, blob)})()

    made_for: list[str] = []
    monkeypatch.setattr(
        aicrush.gcs, "storage_client", lambda uri="": made_for.append(uri) or Client()
    )

    class Snapshot:
        def get_html_str(self, as_iframe: bool) -> str:
            return "<html></html>"

    where = save_report(Snapshot(), "gs://reports/aicrush/drift.html")
    assert where == "gs://reports/aicrush/drift.html" and made_for == [where]
    assert uploads == [("reports", "aicrush/drift.html", "text/html", "<html></html>")]


def test_missing_columns_say_what_is_needed(split, reference: Reference):
    with pytest.raises(ValueError, match="FEATURE_NAMES"):
        analyze_window(split[1].drop(columns=["prediction"]), reference.frame)


@pytest.mark.parametrize(
    ("case", "window_value", "reference_value", "drifts"),
    [
        ("one value in the window", 0.0, None, False),
        ("one value in the reference", None, 0.0, True),
        ("the same value on both sides", 0.0, 0.0, False),
        ("another value on each side", 0.5, 0.0, True),
    ],
)
def test_a_column_with_one_value_is_tested_without_a_numpy_warning(
    runtime_warnings_raise, split, reference, case, window_value, reference_value, drifts
):
    """A column with zero variance (a window of Python files has no tab-indented line) is a normal
    window: both the fast path and Evidently's preset test it, with RuntimeWarning an error.

    Evidently's drift table correlates the numerical columns with np.corrcoef, a 0/0 for such a
    column; its drift test is defined (Wasserstein normed by the reference's spread, floored)."""
    _, pool = split
    window = pool.sample(300, replace=True, random_state=5).reset_index(drop=True)
    ref = reference.frame.copy()
    if window_value is not None:
        window["tab_indent_ratio"] = window_value
    if reference_value is not None:
        ref["tab_indent_ratio"] = reference_value
    result = analyze_window(window, ref)
    column = next(c for c in result.columns if c.column == "tab_indent_ratio")
    assert column.drifted is drifts, (case, column)
    assert report_share_drifted(build_report(window, ref)) == pytest.approx(result.share_drifted)
