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
        monitor.add_pair(_pair(str(1000 + v), texts))
    assert len(loaded) == 20 and len(monitor._load_failed) <= 5
    # made-up names are never looked up, and the ones logged stay bounded too
    for v in range(20):
        monitor.add_pair(_pair(f"made-up-{v}", texts))
    assert len(loaded) == 20 and len(monitor._not_numbers) <= 5
    monitor.close()


def _as_mlflow_answers(split, loaded: list[str]):
    """A reference loader answering as MLflow does: "01" is version 1, and so is the alias
    "challenger" (it names version 1); the reference it returns is version 1's."""

    def loader(model: str, version: str) -> Reference:
        loaded.append(version)
        if version.lstrip("0") not in ("1", "5") and version != "challenger":
            raise LookupError(f"no version {version}")
        frame = split[0].drop(columns=["text"])
        return reference_from_frame(frame, model, "1", f"models:/{model}/1")

    return loader


def _no_reference_drops(monitor: Monitor) -> float:
    value = monitor.registry.get_sample_value(
        "aicrush_monitor_events_dropped_total", {"model": MODEL, "reason": "no_reference"}
    )
    return value or 0.0


def test_a_zero_padded_version_counts_for_its_canonical_version(
    tmp_path: Path, reference: Reference, split
) -> None:
    """`ce-modelversion: 01` is version 1: its events land in version 1's window, and the
    reference is loaded once, not once per event (each load re-persisted it: ~500 KB of WAL)."""
    loaded: list[str] = []
    config = MonitorConfig(state_dir=tmp_path, background=False, warm_up=False)
    monitor = Monitor(
        config, references=[reference], reference_loader=_as_mlflow_answers(split, loaded)
    )
    saved: list[str] = []
    save = monitor.state.save_reference
    monitor.state.save_reference = lambda ref: (saved.append(ref.model_version), save(ref))  # type: ignore[method-assign]
    texts = split[1]["text"].head(3).tolist()
    for version in ("01", "001", "1", "01"):
        monitor.add_pair(_pair(version, texts))
    assert loaded == ["1"] and saved == ["1"]
    assert len(monitor.windows[(MODEL, "1")]) == 12 and _no_reference_drops(monitor) == 0
    assert (MODEL, "01") not in monitor.windows
    monitor.close()


def test_a_version_that_is_no_registry_number_is_dropped_and_warned_once_per_value(
    tmp_path: Path, reference: Reference, split, caplog
) -> None:
    """`ce-modelversion: challenger` (an alias naming version 1) and other spellings that are
    not a registry version number: each event was a reference load and a re-persist, then a
    silent no_reference drop. Now nothing is loaded, the drops are counted, and each distinct
    value is logged once with what to send instead."""
    loaded: list[str] = []
    config = MonitorConfig(state_dir=tmp_path, background=False, warm_up=False)
    monitor = Monitor(
        config, references=[reference], reference_loader=_as_mlflow_answers(split, loaded)
    )
    texts = split[1]["text"].head(2).tolist()
    odd = ["challenger", "v1", "1.0", " 1", "+1", "-1", "\u0661", "1e0", "0x1"]
    with caplog.at_level("WARNING", logger="serving.monitor"):
        for _ in range(3):
            for version in odd:
                monitor.add_pair(_pair(version, texts))
    assert loaded == [] and list(monitor.references) == [(MODEL, VERSION)]
    assert _no_reference_drops(monitor) == 2 * 3 * len(odd)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == len(odd), warned
    for version, message in zip(odd, warned, strict=True):
        assert repr(version) in message and "version number" in message, message
    # another model's odd versions are not the monitor's to warn about (the sender's names)
    caplog.clear()
    with caplog.at_level("WARNING", logger="serving.monitor"):
        monitor.add_pair(
            PairedInference("o", "other-model", "champion", "v1", texts, [("C", 1.0)] * 2)
        )
    assert not caplog.records
    monitor.close()


def test_a_loaded_reference_of_another_version_is_not_installed_per_event(
    tmp_path: Path, reference: Reference, split, caplog
) -> None:
    """A loader that answers version 5 with version 1's reference (a registry that resolves
    names its own way): that reference cannot serve version 5's events, so it is neither
    installed nor persisted, and not fetched again on every event."""
    loaded: list[str] = []
    config = MonitorConfig(state_dir=tmp_path, background=False, warm_up=False)
    monitor = Monitor(
        config, references=[reference], reference_loader=_as_mlflow_answers(split, loaded)
    )
    texts = split[1]["text"].head(2).tolist()
    with caplog.at_level("WARNING", logger="serving.monitor"):
        for _ in range(3):
            monitor.add_pair(_pair("5", texts))
    assert loaded == ["5"] and (MODEL, "1") not in monitor.references
    assert _no_reference_drops(monitor) == 6
    assert any("version 1" in r.getMessage() for r in caplog.records), caplog.records
    monitor.close()


def test_request_and_response_halves_spelling_the_version_differently_pair(
    tmp_path: Path, reference: Reference
) -> None:
    """The version is made canonical before pairing: a request saying 03 and a response saying
    3 are one inference of version 3, also when the version comes as ?modelversion=03."""
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    config = MonitorConfig(state_dir=tmp_path, background=False, warm_up=False)
    monitor = Monitor(config, references=[reference])

    def post(ce_type: str, data: dict, version: str | None, query: str | None = None) -> str:
        attrs = {"type": ce_type, "source": "s", "id": "same", "inferenceservicename": MODEL}
        if version is not None:
            attrs["modelversion"] = version
        headers, body = to_binary(CloudEvent(attrs, data))
        return monitor.ingest(dict(headers), body, version=query)

    req, resp = "org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"
    assert post(req, {"instances": ["a = 1"]}, "03") == "pending"
    assert post(resp, {"predictions": ["Python"]}, "3") == "paired"
    assert post(req, {"instances": ["b = 2"]}, None, query="003") == "pending"
    assert post(resp, {"predictions": ["Python"]}, VERSION) == "paired"
    assert [r[1] for r in monitor.windows[(MODEL, VERSION)].records] == ["a = 1", "b = 2"]
    received = monitor.registry.get_sample_value(
        "aicrush_monitor_events_received_total",
        {"model": MODEL, "version": VERSION, "type": "request"},
    )
    assert received == 2
    monitor.close()


def test_a_parquet_references_version_label_is_the_one_events_are_routed_by() -> None:
    """`--reference ref.parquet --version 03`: events saying 03 (or 3) are read as version 3,
    so the reference is labelled 3; a name stays the name events must give."""
    from serving.monitor.cli import registered_version

    assert registered_version("ref.parquet", MODEL, "03", "") == "3"
    assert registered_version("ref.parquet", MODEL, "champion", "") == "champion"
    assert registered_version("ref.parquet", MODEL, None, "") == "1"
