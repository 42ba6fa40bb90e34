"""The monitor loads the reference of every version it sees events for (a canary's too)."""

from __future__ import annotations

from pathlib import Path

from serving.monitor.events import PairedInference
from serving.monitor.reference import Reference, reference_from_frame
from serving.monitor.service import Monitor, MonitorConfig
from serving.monitor.windows import WindowPolicy
from tests.monitor.conftest import MODEL, VERSION


def _pair(version: str, texts: list[str]) -> PairedInference:
    return PairedInference(
        "id-" + version, MODEL, version, "v1", texts, [("Python", 0.9)] * len(texts)
    )


def test_canary_events_get_their_own_versions_reference(
    tmp_path: Path, reference: Reference, split
) -> None:
    loaded: list[tuple[str, str]] = []

    def loader(model: str, version: str) -> Reference:
        loaded.append((model, version))
        if version == "404":
            raise LookupError("no such version")
        frame = split[0].drop(columns=["text"])
        return reference_from_frame(frame, model, version, f"models:/{model}/{version}")

    config = MonitorConfig(
        state_dir=tmp_path, policy=WindowPolicy(max_rows=400), background=False, warm_up=False
    )
    monitor = Monitor(config, references=[reference], reference_loader=loader)
    texts = split[1]["text"].head(3).tolist()
    monitor.add_pair(_pair("4", texts))  # the canary: version 4, only the champion (3) preloaded
    assert (MODEL, "4") in monitor.references and loaded == [(MODEL, "4")]
    assert len(monitor.windows[(MODEL, "4")]) == 3
    monitor.add_pair(_pair("4", texts))
    assert loaded == [(MODEL, "4")]  # loaded once
    monitor.add_pair(_pair(VERSION, texts))
    assert len(loaded) == 1  # the champion's was there already
    monitor.add_pair(_pair("404", texts))
    monitor.add_pair(_pair("404", texts))
    assert loaded.count((MODEL, "404")) == 1  # a failed load is not retried per event
    assert (MODEL, "404") not in monitor.references
    dropped = monitor.registry.get_sample_value(
        "aicrush_monitor_events_dropped_total", {"model": MODEL, "reason": "no_reference"}
    )
    assert dropped == 4

    without = Monitor(
        MonitorConfig(state_dir=tmp_path / "b", background=False, warm_up=False),
        references=[reference],
    )
    without.add_pair(_pair("4", texts))
    assert (MODEL, "4") not in without.references  # the old behaviour, kept without a loader


def test_events_without_a_version_go_to_the_started_version_not_the_last_loaded(
    tmp_path: Path, reference: Reference, split
) -> None:
    """KServe's logger sends no version. Such events belong to the version the monitor was
    started for (the champion), not to a canary's reference loaded since, and not to one that a
    previous run left in the state, also after a restart."""

    def loader(model: str, version: str) -> Reference:
        frame = split[0].drop(columns=["text"])
        return reference_from_frame(frame, model, version, f"models:/{model}/{version}")

    config = MonitorConfig(
        state_dir=tmp_path, policy=WindowPolicy(max_rows=400), background=False, warm_up=False
    )
    texts = split[1]["text"].head(3).tolist()
    monitor = Monitor(config, references=[reference], reference_loader=loader)
    monitor.add_pair(_pair("4", texts))  # a canary's events load version 4's reference
    assert list(monitor.references)[-1] == (MODEL, "4")
    assert monitor.route(MODEL, None) == (MODEL, VERSION)
    monitor.close()
    restarted = Monitor(config, references=[reference], reference_loader=loader)
    assert (MODEL, "4") in restarted.references  # kept in the state
    assert restarted.route(MODEL, None) == (MODEL, VERSION)
    restarted.close()
    # Started without a version of its own: the model's only (or last) reference, as before.
    alone = Monitor(MonitorConfig(state_dir=tmp_path / "b", background=False, warm_up=False))
    assert alone.route(MODEL, None) is None
    alone.close()


def test_references_load_only_for_watched_models_and_failures_stay_bounded(
    tmp_path: Path, reference: Reference, split, monkeypatch
) -> None:
    """Model and version come from the sender: another model's events never reach the loader
    (MLflow), and remembered failures of made-up versions stay bounded."""
    from serving.monitor import service

    loaded: list[tuple[str, str]] = []

    def loader(model: str, version: str) -> Reference:
        loaded.append((model, version))
        raise LookupError("no such version")

    monkeypatch.setattr(service, "MAX_FAILED_LOADS", 5)
    config = MonitorConfig(state_dir=tmp_path, background=False, warm_up=False)
    monitor = Monitor(config, references=[reference], reference_loader=loader)
    texts = split[1]["text"].head(1).tolist()
    other = PairedInference("o", "someone-elses-model", "1", "v1", texts, [("C", 0.9)])
    monitor.add_pair(other)
    assert loaded == []
    for v in range(20):
        monitor.add_pair(_pair(f"made-up-{v}", texts))
    assert len(loaded) == 20 and len(monitor._load_failed) <= 5
    monitor.close()
