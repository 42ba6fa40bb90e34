"""A restart keeps the reference (same sha256) and the open window (same rows, same verdict)."""

from __future__ import annotations

from serving.monitor.drift import analyze_window
from serving.monitor.windows import window_frame
from tests.monitor.conftest import MODEL, VERSION, make_monitor


def test_restart_keeps_reference_and_open_window(tmp_path, split, reference):
    _, pool = split
    rows = pool[pool["prediction"].isin(["JavaScript", "CSS", "Python"])].sample(
        250, replace=True, random_state=7
    )
    records = [
        (1000.0 + i, t, p, 0.9)
        for i, (t, p) in enumerate(zip(rows["text"], rows["prediction"], strict=True))
    ]
    key = (MODEL, VERSION)

    first = make_monitor(tmp_path / "state", reference, max_rows=1000)
    first.add_records(key, records)
    before = analyze_window(window_frame(first.windows[key].records), reference.frame)
    first.close()

    # Restart with no reference given: everything comes back from the state folder.
    second = make_monitor(tmp_path / "state", None, max_rows=1000)
    try:
        assert list(second.references) == [key]
        assert second.references[key].sha256 == reference.sha256
        assert (
            second.registry.get_sample_value(
                "aicrush_drift_reference_info",
                {
                    "model": MODEL,
                    "version": VERSION,
                    "sha256": reference.sha256,
                    "source": "test-corpus",
                },
            )
            == 1
        )
        assert second.windows[key].records == records
        assert (
            second.registry.get_sample_value(
                "aicrush_drift_open_window_rows", {"model": MODEL, "version": VERSION}
            )
            == 250
        )
        after = second.analyse_now(*key)
        assert after.enough_data and before.enough_data  # 250 rows: over the minimum
        assert after.dataset_drift == before.dataset_drift
        assert after.share_drifted == before.share_drifted
        assert [c.score for c in after.columns] == [c.score for c in before.columns]
        # The analysed rows left the open window, on disk too; the verdict is recorded.
        assert second.state.load_records(*key) == []
        [row] = second.state.results()
        assert row["reference_sha256"] == reference.sha256 and row["n_rows"] == 250
    finally:
        second.close()


def test_background_featurization_gives_the_inline_verdict(tmp_path, split, reference):
    """Features computed ahead while the window fills give exactly the inline verdict."""
    from serving.monitor.service import Monitor, MonitorConfig
    from serving.monitor.windows import WindowPolicy

    _, pool = split
    rows = pool.sample(300, replace=True, random_state=9)
    records = [(1.0, t, p, 0.9) for t, p in zip(rows["text"], rows["prediction"], strict=True)]
    expected = analyze_window(window_frame(records), reference.frame)
    monitor = Monitor(
        MonitorConfig(
            state_dir=tmp_path / "bg",
            policy=WindowPolicy(max_rows=300),
            background=True,
            featurize_chunk=50,
            warm_up=False,
        ),
        references=[reference],
    )
    try:
        for start in range(0, 300, 10):
            monitor.add_records((MODEL, VERSION), records[start : start + 10])
        monitor.flush()
        got = monitor.last_results[(MODEL, VERSION)]
        assert [c.score for c in got.columns] == [c.score for c in expected.columns]
        assert monitor._features == {}  # nothing left cached after the window closed
    finally:
        monitor.close()
