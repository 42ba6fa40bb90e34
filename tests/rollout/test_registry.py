"""Alias and tag bookkeeping in a real MLflow tracking server on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aicrush.rollout_config import RolloutConfig
from serving.rollout.local import default_fetcher
from serving.rollout.machine import ModelRef, Rollout, RolloutError
from serving.rollout.registry import MlflowRolloutRegistry
from tests.mlflow_server import mlflow_server as start_mlflow_server

pytestmark = pytest.mark.integration
MODEL = "aicrush-code-language"


class RecordingBackend:
    """Backend double: records the transitions the machine asks for."""

    name = "local"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def deploy(self, stable: ModelRef, canary: ModelRef | None, percent: int) -> None:
        self.calls.append(("deploy", stable.version, canary.version if canary else None, percent))

    def set_traffic(self, percent: int, *, canary: str | None = None) -> None:
        self.calls.append(("traffic", percent))

    def promote(self, *, canary: str | None = None) -> None:
        self.calls.append(("promote",))

    def rollback(self, *, canary: str | None = None) -> None:
        self.calls.append(("rollback",))

    def status(self) -> dict:
        return {"healthy": True}

    def metrics_source(self):  # pragma: no cover - analysis is not run here
        raise NotImplementedError


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.url


def _register(url: str, folders: list[Path], model: str = MODEL) -> list[str]:
    import mlflow

    from aicrush.registry import tracking

    client = mlflow.MlflowClient(url)
    client.create_registered_model(model)
    versions = []
    with tracking(url):  # scoped: the server stops after this module, the process goes on
        exp = mlflow.set_experiment("aicrush")
        for folder in folders:
            with mlflow.start_run(experiment_id=exp.experiment_id) as run:
                mlflow.log_artifacts(str(folder), artifact_path="model")
            mv = client.create_model_version(
                model, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            versions.append(str(mv.version))
    client.set_registered_model_alias(model, "challenger", versions[-1])
    return versions


def test_promotion_moves_champion_and_rollback_leaves_it(
    mlflow_server: str, tmp_path: Path, random_model_dir: Path, random_model_dir_v2: Path
) -> None:
    v1, v2 = _register(mlflow_server, [random_model_dir, random_model_dir_v2])
    registry = MlflowRolloutRegistry(mlflow_server, MODEL, backend="local")
    backend = RecordingBackend()
    rollout = Rollout(backend, registry, RolloutConfig(), tmp_path / "state.json")

    assert registry.champion() is None
    rollout.deploy(v1)  # first deployment: v1 serves everything and becomes champion
    assert registry.champion().version == v1
    assert registry.tags(v1)["rollout.outcome"] == "promoted"

    rollout.deploy(None, percent=10)  # None: the challenger alias (v2)
    assert backend.calls[-1] == ("deploy", v1, v2, 10)
    tags = registry.tags(v2)
    assert (
        tags["rollout.outcome"] == "canary"
        and tags["rollout.traffic"] == "10"
        and tags["rollout.deployed_at"]
    )
    assert registry.champion().version == v1  # champion moves only on promotion
    rollout.set_traffic(50)
    assert registry.tags(v2)["rollout.traffic"] == "50"

    rollout.promote()
    assert registry.champion().version == v2
    tags = registry.tags(v2)
    assert (
        tags["rollout.outcome"] == "promoted"
        and tags["rollout.traffic"] == "100"
        and tags["rollout.updated_at"]
    )
    assert registry.tags(v1)["rollout.outcome"] == "replaced"
    assert [e["event"] for e in json.loads(tags["rollout.history"])] == [
        "canary",
        "canary",
        "promoted",
    ]

    rollout.deploy(v1, percent=25)  # an older version as canary, then rolled back
    rollout.rollback(reason="p99 latency 2.1s beyond 1s")
    assert registry.champion().version == v2
    tags = registry.tags(v1)
    assert tags["rollout.outcome"] == "rolled_back" and tags["rollout.traffic"] == "0"
    assert tags["rollout.rollback_reason"] == "p99 latency 2.1s beyond 1s"
    assert rollout.status()["champion"] == v2
    first_deployed = tags["rollout.deployed_at"]

    # Deployed again and promoted: the earlier rollback's reason no longer describes it, and
    # deployed_at is this deployment's (both stayed from the first time).
    time.sleep(1.1)  # deployed_at has a resolution of seconds
    rollout.deploy(v1, percent=25)
    assert registry.tags(v1)["rollout.deployed_at"] > first_deployed
    rollout.promote()
    tags = registry.tags(v1)
    assert "rollout.rollback_reason" not in tags and tags["rollout.outcome"] == "promoted"
    rollout.deploy(v2, percent=25)  # back to v2 as the champion for what follows
    rollout.promote()

    with pytest.raises(RolloutError, match="already the champion"):
        rollout.deploy(v2)
    with pytest.raises(RolloutError, match=r"no version '99'.*versions 1, 2"):
        rollout.deploy("99")

    # The local backend can fetch a registered version's model folder from its download URI.
    folder = default_fetcher(registry.champion())
    assert (folder / "aicrush.json").is_file()


def test_history_tag_stays_valid_json_however_long_the_events(
    mlflow_server: str, tmp_path: Path, random_model_dir: Path
) -> None:
    from serving.rollout.registry import HISTORY_MAX_CHARS

    [version] = _register(mlflow_server, [random_model_dir], model="history-model")
    registry = MlflowRolloutRegistry(mlflow_server, "history-model", backend="kubernetes")
    for i in range(12):  # each reason alone is a fifth of the tag's budget
        registry.record_rollback(version, f"attempt {i}: " + "p99 latency beyond 1s; " * 45)
    value = registry.tags(version)["rollout.history"]
    assert len(value) <= HISTORY_MAX_CHARS
    history = json.loads(value)  # whole events dropped, never a cut string
    assert history[-1]["rollback_reason"].startswith("attempt 11:")


def test_the_registry_leaves_the_process_tracking_uri_alone(
    mlflow_server: str, random_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a rollout registry once set mlflow's process-wide tracking URI: every later MLflow
    call of the process (an evaluate step's models:/ download, another store's registry) went to
    this server. The download URI it hands out resolves against its own server all the same."""
    import mlflow

    [version] = _register(mlflow_server, [random_model_dir], model="scoped-model")
    elsewhere = "http://127.0.0.1:9"  # nothing listens: a download through it would fail
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    registry = MlflowRolloutRegistry(mlflow_server, "scoped-model")
    ref = registry.resolve(version)
    assert mlflow.get_tracking_uri() == elsewhere
    assert ref.uri.startswith("mlflow-artifacts:") and ref.tracking_uri == mlflow_server
    assert (default_fetcher(ref) / "aicrush.json").is_file()
    assert mlflow.get_tracking_uri() == elsewhere
