"""Events without a version follow the champion alias after a promotion, with a real MLflow
server: the monitor re-resolves the alias on its tick, loads the new version's reference, and an
outage of the registry keeps the last champion (logged once)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary

from serving.monitor.cli import build_monitor, registered_version
from serving.monitor.reference import REFERENCE_ARTIFACT, Reference
from tests.mlflow_server import mlflow_server
from tests.monitor.conftest import MODEL
from tests.monitor.test_app import REQ, RESP, kserve_event

pytestmark = pytest.mark.integration


def _register_versions(url: str, reference: Reference, folder: Path, n: int) -> list[str]:
    """``n`` versions of MODEL, each run holding the reference where register_model logs it."""
    import mlflow

    from aicrush.registry import tracking

    artifact_dir, _, name = REFERENCE_ARTIFACT.rpartition("/")
    local = folder / name
    local.write_bytes(reference.parquet)
    client = mlflow.MlflowClient(url)
    client.create_registered_model(MODEL)
    versions = []
    with tracking(url):
        experiment = mlflow.set_experiment("aicrush")
        for _ in range(n):
            with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
                mlflow.log_artifact(str(local), artifact_path=artifact_dir)
            mv = client.create_model_version(
                MODEL, source=f"{run.info.artifact_uri}/{artifact_dir}", run_id=run.info.run_id
            )
            versions.append(str(mv.version))
    return versions


def _versionless_inference(monitor, event_id: str) -> None:
    """One inference as KServe's logger sends it: request and response, no model version."""
    for ce_type, data in (
        (REQ, {"instances": [{"text": "def f():\n    return 1\n"}]}),
        (RESP, {"predictions": [{"label": "Python", "score": 0.9}]}),
    ):
        headers, body = to_binary(kserve_event(ce_type, event_id, data))
        assert "ce-modelversion" not in {k.lower() for k in headers}
        monitor.ingest(dict(headers), body)


def _monitor(url: str, selector: str | None, state_dir: Path):
    """The monitor as `aicrush monitor --reference mlflow [--version SELECTOR]
    --version-refresh-s 30` builds it (in the foreground: the tick resolves inline)."""
    return build_monitor(
        reference="mlflow",
        model=MODEL,
        version=registered_version("mlflow", MODEL, selector, url),
        selector=selector,
        version_refresh_s=30,
        state_dir=state_dir,
        tracking_uri=url,
        background=False,
    )


def _counted(monitor, version: str) -> float:
    value = monitor.registry.get_sample_value(
        "aicrush_monitor_records_total", {"model": MODEL, "version": version}
    )
    return value or 0.0


def test_versionless_events_follow_the_champion_alias(
    tmp_path, monkeypatch, caplog, reference: Reference
):
    with mlflow_server(tmp_path / "mlflow") as server:
        import mlflow

        v1, v2 = _register_versions(server.url, reference, tmp_path, 2)
        registry = mlflow.MlflowClient(server.url)
        # No champion yet: the monitor starts on the challenger (v1). A training run then moves
        # the challenger to v2, which nothing serves: versionless events stay on v1.
        registry.set_registered_model_alias(MODEL, "challenger", v1)
        early = _monitor(server.url, None, tmp_path / "early")
        try:
            early.tick(now=0)
            registry.set_registered_model_alias(MODEL, "challenger", v2)
            early.tick(now=30)
            _versionless_inference(early, "challenger-moved")
            assert early.default_versions[MODEL] == v1
            assert (_counted(early, v1), _counted(early, v2)) == (1, 0)
        finally:
            early.close()
        registry.set_registered_model_alias(MODEL, "champion", v1)
        monitor = _monitor(server.url, None, tmp_path / "state")
        try:
            start = 1_000.0  # the tick's clock
            monitor.tick(now=start)
            _versionless_inference(monitor, "before")
            assert monitor.default_versions[MODEL] == v1
            assert (_counted(monitor, v1), _counted(monitor, v2)) == (1, 0)

            registry.set_registered_model_alias(MODEL, "champion", v2)  # the promotion
            monitor.tick(now=start + 10)  # not due yet: the cadence is bounded
            _versionless_inference(monitor, "soon-after")
            assert (_counted(monitor, v1), _counted(monitor, v2)) == (2, 0)
            monitor.tick(now=start + 30)
            assert monitor.default_versions[MODEL] == v2
            assert (MODEL, v2) in monitor.references  # its reference, loaded from its run
            assert monitor.references[(MODEL, v2)].source.startswith(f"models:/{MODEL}/{v2} ")
            _versionless_inference(monitor, "after")
            assert (_counted(monitor, v1), _counted(monitor, v2)) == (2, 1)

            # --version 1 (a number) means that version: it is not followed.
            pinned = _monitor(server.url, v1, tmp_path / "pinned")
            pinned.tick(now=start + 30)
            assert pinned.follow == {} and pinned.default_versions[MODEL] == v1
            pinned.close()

            # The registry goes away: the last champion stays, and it is said once.
            server.stop()
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="serving.monitor.service"):
                for i in range(1, 4):
                    monitor.tick(now=start + 30 + 30 * i)
                    _versionless_inference(monitor, f"outage-{i}")
            assert monitor.default_versions[MODEL] == v2
            assert (_counted(monitor, v1), _counted(monitor, v2)) == (2, 4)
            said = [r.getMessage() for r in caplog.records if "cannot re-resolve" in r.getMessage()]
            assert len(said) == 1, caplog.text
            assert f"stay on version {v2}" in said[0]
        finally:
            monitor.close()


def test_a_slow_registry_does_not_hold_the_tick_up(tmp_path, reference: Reference, split):
    """In the service (background mode) the re-resolution runs on a thread of its own: the tick
    returns while the registry is slow, and no second call starts while one waits."""
    import threading

    from serving.monitor.reference import reference_from_frame
    from serving.monitor.service import Monitor, MonitorConfig

    called, answer, calls = threading.Event(), threading.Event(), []

    def champion() -> str:
        calls.append(1)
        called.set()
        assert answer.wait(30)
        return "4"

    def loader(model: str, version: str) -> Reference:
        return reference_from_frame(split[0].drop(columns=["text"]), model, version, "test")

    config = MonitorConfig(state_dir=tmp_path, follow_every_s=30, warm_up=False)
    monitor = Monitor(
        config, references=[reference], reference_loader=loader, follow={MODEL: champion}
    )
    try:
        monitor.tick(now=0)
        monitor.tick(now=30)  # due: starts the call, which waits for the registry
        assert called.wait(10)
        monitor.tick(now=60)  # due again, but the first call still waits: no second one
        assert len(calls) == 1 and monitor.default_versions[MODEL] == reference.model_version
        answer.set()
        deadline = time.monotonic() + 10
        while monitor.default_versions[MODEL] != "4" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert monitor.default_versions[MODEL] == "4" and (MODEL, "4") in monitor.references
    finally:
        monitor.close()
