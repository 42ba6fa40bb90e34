"""register_model against a real MLflow store: lineage, idempotent retries, all or nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from aicrush.config import PRESETS, build_config
from aicrush.model_folder import resolve_model_dir
from aicrush.registry import CHALLENGER, REFERENCE_ARTIFACT, client, download_model, tracking
from aicrush.state import local_tracking_uri
from components.register_model import RUN_KEY_TAG, export_for_serving, register
from features.file_features import FEATURE_NAMES, compute_file_features
from tests.model_factory import DEFAULT_LABELS

SNIPPETS = {
    "Python": "import os\n\ndef main():\n    return os.getcwd()\n",
    "C": "#include <stdio.h>\nint main(void) {\n    return 0;\n}\n",
    "CSS": "body {\n  margin: 0;\n  color: #333;\n}\n",
    "JavaScript": "function f(x) {\n  return x + 1;\n}\nmodule.exports = f;\n",
    "Shell": "#!/bin/sh\nset -e\necho hello\n",
}


@pytest.fixture
def features_dir(tmp_path: Path) -> Path:
    out = tmp_path / "features"
    out.mkdir()
    for split, n in (("train", 10), ("val", 6), ("test", 4)):
        rows = []
        for i in range(n):
            lang = DEFAULT_LABELS[i % len(DEFAULT_LABELS)]
            text = SNIPPETS[lang] + f"# {split} {i}\n"
            rows.append(
                {
                    "repository": f"repo{i}",
                    "path": f"f{i}",
                    "sha256": f"{split}{i}",
                    "file_id": f"{split}{i}",
                    "language": lang,
                    "text": text,
                    "size": len(text),
                }
            )
        frame = pd.DataFrame(rows)
        frame = pd.concat([frame, compute_file_features(frame["text"])], axis=1)
        frame.to_parquet(out / f"{split}.parquet", index=False)
    return out


def _register(model_dir: Path, features_dir: Path, state: Path, run_key: str = "run-1"):
    cfg = build_config({"registry": {"reference_rows": 10}})
    return register(
        model_dir,
        features_dir,
        cfg,
        run_key=run_key,
        # As evaluate_model logs them: the model's and the baseline's (same split) side by side.
        metrics={
            "accuracy": 0.5,
            "macro_f1": 0.4,
            "baseline_accuracy": 0.8,
            "baseline_macro_f1": 0.7,
        },
        manifest={"content_hash": "abc123", "sources": ["/src"]},
        state=state,
    )


def test_register_logs_lineage_reference_and_alias(
    random_model_dir: Path, features_dir: Path, state_dir: Path
):
    result = _register(random_model_dir, features_dir, state_dir)
    assert result.created and result.version == "1"
    uri = local_tracking_uri(state_dir)
    c = client(uri)
    mv = c.get_model_version_by_alias(result.model_name, CHALLENGER)
    assert str(mv.version) == "1"
    assert mv.tags[RUN_KEY_TAG] == "run-1"
    assert mv.tags["dataset_content_hash"] == "abc123"
    run = c.get_run(result.run_id)
    assert run.data.metrics["macro_f1"] == pytest.approx(0.4)
    assert run.data.metrics["baseline_macro_f1"] == pytest.approx(0.7)
    assert run.data.params["evaluate.baseline_margin"] == "-0.05"
    assert run.data.params["train.max_length"] == str(PRESETS["tiny"]["train"]["max_length"])
    assert json.loads(run.data.tags["sources"]) == ["/src"]

    ref = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=uri
        )
    )
    assert list(ref.columns) == [*FEATURE_NAMES, "label", "prediction", "score"]
    # The reference draws from both held-out splits: 6 validation + 4 test files.
    assert len(ref) == 10 and set(ref["prediction"]) <= set(DEFAULT_LABELS)

    # The registered pyfunc loads back (models from code, no pickle) and predicts.
    with tracking(uri):
        model = mlflow.pyfunc.load_model(f"models:/{result.model_name}@{CHALLENGER}")
    out = model.predict(pd.DataFrame({"text": ["print('hi')", "int x;"]}))
    assert list(out.columns) == ["label", "score"] and len(out) == 2
    assert np.all((out["score"] > 0) & (out["score"] <= 1))

    resolved = download_model(uri, result.model_name, alias=CHALLENGER, dst=state_dir / "dl")
    assert resolved is not None and (resolved.path / "aicrush.json").is_file()

    # The ONNX exports travel with the weights; the recorded backend follows the measured
    # agreement (a random-weight model may not reach serving.min_agreement with int8 weights).
    folder = resolve_model_dir(resolved.path)
    assert (folder / "model.onnx").is_file() and (folder / "model.int8.onnx").is_file()
    meta = json.loads((folder / "aicrush.json").read_text())
    agreement = meta["onnx"]["label_agreement"]
    assert set(agreement) == {"onnx", "onnx-int8"}
    expected = "onnx-int8" if agreement["onnx-int8"] >= 0.995 else "torch"
    assert meta["serving_backend"] == mv_tags(uri, result)["serving_backend"] == expected
    assert float(mv_tags(uri, result)["label_agreement.onnx"]) == pytest.approx(agreement["onnx"])
    assert not (random_model_dir / "model.onnx").exists()  # the input artifact is left as it was


def mv_tags(uri: str, result) -> dict[str, str]:
    return dict(client(uri).get_model_version(result.model_name, result.version).tags)


def test_export_for_serving_keeps_an_onnx_backend_only_with_label_agreement(
    random_model_dir: Path, tmp_path: Path
):
    from aicrush.config import ServingConfig
    from aicrush.model_folder import TextClassifier

    texts = list(SNIPPETS.values()) * 4
    fp32 = [p.label for p in TextClassifier.from_dir(random_model_dir, device="cpu").predict(texts)]
    kept = export_for_serving(
        random_model_dir, tmp_path / "a", texts, fp32, ServingConfig(backend="onnx")
    )
    assert kept.backend == "onnx" and kept.agreement["onnx"] == 1.0 and not kept.reason
    assert json.loads((tmp_path / "a" / "aicrush.json").read_text())["serving_backend"] == "onnx"

    # Labels the ONNX model does not give: the agreement is measured, and torch is recorded.
    wrong = [DEFAULT_LABELS[(DEFAULT_LABELS.index(x) + 1) % len(DEFAULT_LABELS)] for x in fp32]
    refused = export_for_serving(
        random_model_dir, tmp_path / "b", texts, wrong, ServingConfig(backend="onnx")
    )
    assert refused.backend == "torch" and refused.agreement["onnx"] == 0.0
    assert "serving.min_agreement" in refused.reason
    meta = json.loads((tmp_path / "b" / "aicrush.json").read_text())
    assert meta["serving_backend"] == "torch" and (tmp_path / "b" / "model.onnx").is_file()


def test_retried_step_registers_no_second_version(
    random_model_dir: Path, features_dir: Path, state_dir: Path
):
    first = _register(random_model_dir, features_dir, state_dir, run_key="kfp-run-7")
    again = _register(random_model_dir, features_dir, state_dir, run_key="kfp-run-7")
    assert (again.version, again.created) == (first.version, False)
    c = client(local_tracking_uri(state_dir))
    assert len(c.search_model_versions(f"name = '{first.model_name}'")) == 1
    other = _register(random_model_dir, features_dir, state_dir, run_key="kfp-run-8")
    assert other.version == "2" and other.created


def test_failure_after_version_creation_leaves_no_version(
    random_model_dir: Path, features_dir: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    def broken(self, name, alias, version):
        raise RuntimeError("registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    with pytest.raises(RuntimeError, match="registry went away"):
        _register(random_model_dir, features_dir, state_dir, run_key="flaky")
    monkeypatch.undo()
    c = client(local_tracking_uri(state_dir))
    # The store is the one the step wrote to: its run is there, FAILED.
    assert [
        r.info.status for r in c.search_runs([c.get_experiment_by_name("aicrush").experiment_id])
    ] == ["FAILED"]
    assert c.search_model_versions("name = 'aicrush-code-language'") == []
    # Created by the failed call, but kept: a concurrent registration may be adding its version.
    assert [m.name for m in c.search_registered_models()] == ["aicrush-code-language"]
    # The retry then completes normally.
    assert _register(random_model_dir, features_dir, state_dir, run_key="flaky").created


def test_pyfunc_requires_only_what_an_index_serves(
    random_model_dir: Path, features_dir: Path, state_dir: Path
):
    result = _register(random_model_dir, features_dir, state_dir)
    uri = local_tracking_uri(state_dir)
    with tracking(uri):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{result.model_name}/1"))
    reqs = [
        line.strip()
        for line in (local / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = {r.split("==")[0].split(">")[0].split("<")[0].lower() for r in reqs}
    assert "aicrush" not in names, reqs  # no index serves it
    assert {"torch", "transformers", "mlflow"} <= names
    assert not any("+" in r for r in reqs), reqs  # no local version labels such as +cpu
    # The kernel the pyfunc imports travels with the model instead.
    assert (local / "code" / "aicrush" / "model_folder.py").is_file()


def test_the_training_curve_lands_in_the_registered_run(
    random_model_dir: Path, features_dir: Path, state_dir: Path, tmp_path: Path
):
    """train_model's training_history.json becomes per-step metrics of the version's run."""
    import shutil

    from aicrush.model_folder import TRAINING_HISTORY_FILE

    model_dir = tmp_path / "model"
    shutil.copytree(random_model_dir, model_dir)
    curve = [
        {"step": 5, "epoch": 0.5, "train_loss": 1.6, "learning_rate": 1e-3, "grad_norm": 0.4},
        {"step": 10, "epoch": 1.0, "train_loss": 1.1, "learning_rate": 5e-4, "grad_norm": 0.3},
        {"step": 10, "epoch": 1.0, "val_accuracy": 0.55},
        {"step": 20, "epoch": 2.0, "val_accuracy": 0.75},
    ]
    (model_dir / TRAINING_HISTORY_FILE).write_text(json.dumps(curve))
    result = _register(model_dir, features_dir, state_dir)
    c = client(local_tracking_uri(state_dir))

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in c.get_metric_history(result.run_id, key))

    assert history("train_loss") == [(5, 1.6), (10, 1.1)]
    assert history("learning_rate") == [(5, 1e-3), (10, 5e-4)]
    assert history("val_accuracy") == [(10, 0.55), (20, 0.75)]
    assert c.get_run(result.run_id).data.metrics["macro_f1"] == 0.4  # evaluation metrics stay


# ------------------------------------------- interrupted registrations (a real tracking server)


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.url


def _register_at(url: str, name: str, model_dir: Path, features_dir: Path, state: Path, key: str):
    cfg = build_config({"registry": {"reference_rows": 10, "model_name": name}})
    return register(
        model_dir,
        features_dir,
        cfg,
        run_key=key,
        metrics={"accuracy": 0.5, "macro_f1": 0.4},
        manifest={"content_hash": "abc123", "sources": ["/src"]},
        state=state,
        tracking_uri=url,
    )


def _interrupt(monkeypatch: pytest.MonkeyPatch, method: str, error: BaseException) -> None:
    from mlflow import MlflowClient

    def broken(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(MlflowClient, method, broken)


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("create_registered_model", KeyboardInterrupt()),  # the model itself half-made
        ("create_model_version", KeyboardInterrupt()),  # no version yet
        ("set_model_version_tag", KeyboardInterrupt()),  # a version without its tags
        ("set_registered_model_alias", KeyboardInterrupt()),  # tags set, no alias
        ("create_model_version", RuntimeError("registry went away")),
    ],
)
def test_an_interrupted_first_registration_leaves_no_version(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    error: BaseException,
):
    """Ctrl-C in register_model must not leave a version without its alias and tags; an empty
    registered model is explained by `aicrush serve` (it said 'versions none; aliases none')."""
    from aicrush.registry import ModelVersionNotFound, find_version

    name = f"interrupted-{method.replace('_', '-')}-{type(error).__name__.lower()}"
    _interrupt(monkeypatch, method, error)
    with pytest.raises(type(error)):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-1")
    monkeypatch.undo()
    c = client(mlflow_url)
    assert c.search_model_versions(f"name = '{name}'") == []
    # The registered model, when the call got to create it, stays (empty): deleting it could
    # take a concurrent registration's version with it. `aicrush serve` says what happened.
    with pytest.raises(
        ModelVersionNotFound,
        match="no registered model" if method == "create_registered_model" else "has no versions",
    ):
        find_version(mlflow_url, name)
    runs = c.search_runs(
        [c.get_experiment_by_name("aicrush").experiment_id], "tags.`aicrush.run_key` = 'kfp-run-1'"
    )
    assert runs and {r.info.status for r in runs} <= {"FAILED", "KILLED"}


def test_an_interrupted_registration_keeps_the_versions_there_were(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    name = "interrupted-second-version"
    first = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-a")
    _interrupt(monkeypatch, "set_model_version_tag", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-b")
    monkeypatch.undo()
    c = client(mlflow_url)
    assert [v.version for v in c.search_model_versions(f"name = '{name}'")] == [first.version]
    assert c.get_registered_model(name).aliases == {CHALLENGER: first.version}


def test_a_version_whose_cleanup_failed_is_marked_skipped_and_replaced(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """The registry went away during the tags and stayed away for the cleanup: the version is
    tagged incomplete, so no default pick serves it and the retried step replaces it."""
    from aicrush.registry import REGISTRATION_TAG, ModelVersionNotFound, find_version

    name = "cleanup-failed"
    _interrupt(monkeypatch, "set_model_version_tag", KeyboardInterrupt())
    _interrupt(monkeypatch, "delete_model_version", ConnectionError("registry unreachable"))
    with pytest.raises(KeyboardInterrupt):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-x")
    monkeypatch.undo()
    c = client(mlflow_url)
    (left,) = c.search_model_versions(f"name = '{name}'")
    assert left.tags[REGISTRATION_TAG] == "incomplete"
    with pytest.raises(ModelVersionNotFound, match=r"versions 1 \(incomplete\); aliases none"):
        find_version(mlflow_url, name)

    retried = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-x")
    assert retried.created and retried.version == "2"
    (done,) = c.search_model_versions(f"name = '{name}'")
    assert done.version == "2" and done.tags[REGISTRATION_TAG] == "complete"
    assert find_version(mlflow_url, name).version == "2"


def _other_attempt_version(url: str, name: str, run_key: str, *, complete: bool) -> str:
    """A version registered by another attempt or run, through its own MLflow run (left RUNNING,
    as while that attempt is still writing); returns its version number."""
    from mlflow.exceptions import MlflowException

    from aicrush.registry import REGISTRATION_TAG

    c = client(url)
    exp = c.get_experiment_by_name("aicrush")
    exp_id = exp.experiment_id if exp is not None else c.create_experiment("aicrush")
    run = c.create_run(exp_id, tags={RUN_KEY_TAG: run_key})
    with contextlib.suppress(MlflowException):  # already registered
        c.create_registered_model(name)
    mv = c.create_model_version(
        name,
        source=f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={RUN_KEY_TAG: run_key, REGISTRATION_TAG: "complete" if complete else "incomplete"},
    )
    return str(mv.version)


def _fail_upload(monkeypatch: pytest.MonkeyPatch, log_model) -> None:
    """Replace the model upload (``mlflow.pyfunc.log_model``); ``mlflow.pyfunc`` is a lazy
    loader until imported, so the real module is patched."""
    import importlib

    monkeypatch.setattr(importlib.import_module("mlflow.pyfunc"), "log_model", log_model)


def test_a_retry_whose_first_lookup_fails_keeps_the_version_of_its_first_attempt(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Attempt 1 registered v1; attempt 2 (same run key) met a 503 on its first lookup and then
    failed on the upload: the lookup's error read as "nothing registered yet" made the cleanup
    delete v1 and its alias. The step now fails at the lookup, before registering anything."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    name = "retry-lookup-503"
    first = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-r")
    search = MlflowClient.search_model_versions
    calls: list[str] = []

    def unavailable_once(self, *args, **kwargs):
        calls.append("search")
        if len(calls) == 1:
            raise MlflowException(
                "API request to endpoint /api/2.0/mlflow/model-versions/search failed with "
                "error code 503 != 200",
                error_code=TEMPORARILY_UNAVAILABLE,
            )
        return search(self, *args, **kwargs)

    def upload_fails(*args, **kwargs):
        calls.append("upload")
        raise ConnectionError("upload failed")

    monkeypatch.setattr(MlflowClient, "search_model_versions", unavailable_once)
    _fail_upload(monkeypatch, upload_fails)
    with pytest.raises(RuntimeError, match="could not look up the versions run kfp-run-r"):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-r")
    monkeypatch.undo()
    assert "upload" not in calls  # nothing was logged or registered on a lookup that failed
    c = client(mlflow_url)
    assert [v.version for v in c.search_model_versions(f"name = '{name}'")] == [first.version]
    assert c.get_registered_model(name).aliases == {CHALLENGER: first.version}


def test_a_failed_attempt_deletes_no_version_another_attempt_of_its_run_registered(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Two attempts of one run key (a retried pod whose first one still runs): the one that
    fails before creating its version deletes only what it created, not the other's version."""
    name = "two-attempts"
    other: list[str] = []

    def upload_fails(*args, **kwargs):
        # The other attempt completes its registration while this one uploads.
        other.append(_other_attempt_version(mlflow_url, name, "kfp-run-t", complete=True))
        raise ConnectionError("upload failed")

    _fail_upload(monkeypatch, upload_fails)
    with pytest.raises(ConnectionError):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-t")
    monkeypatch.undo()
    c = client(mlflow_url)
    assert [v.version for v in c.search_model_versions(f"name = '{name}'")] == other == ["1"]


def test_a_failure_when_the_run_ends_keeps_the_complete_version_and_its_alias(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Ending the MLflow run failed after the version was complete and the alias had moved:
    the version was deleted, and the alias with it (the previous challenger was gone too)."""
    from aicrush.registry import REGISTRATION_TAG

    name = "run-end-fails"
    first = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-a")
    _interrupt(monkeypatch, "set_terminated", ConnectionError("registry went away"))
    with pytest.raises(ConnectionError):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-b")
    monkeypatch.undo()
    c = client(mlflow_url)
    versions = {v.version: v for v in c.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == sorted([first.version, "2"])
    assert versions["2"].tags[REGISTRATION_TAG] == "complete"
    assert c.get_registered_model(name).aliases == {CHALLENGER: "2"}
    # The retried step finds the complete version and registers no other.
    again = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "run-b")
    assert (again.version, again.created) == ("2", False)


def test_a_failed_registration_never_deletes_the_registered_model(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Deleting the registered model "when it has no versions" was check-then-act: a concurrent
    registration's version created between the check and the delete went with it."""
    from mlflow import MlflowClient

    name = "concurrent-first-registrations"
    delete = MlflowClient.delete_registered_model
    concurrent: list[str] = []

    def delete_after_a_concurrent_registration(self, *args, **kwargs):
        concurrent.append(_other_attempt_version(mlflow_url, name, "kfp-run-other", complete=True))
        return delete(self, *args, **kwargs)

    monkeypatch.setattr(
        MlflowClient, "delete_registered_model", delete_after_a_concurrent_registration
    )
    _interrupt(monkeypatch, "set_registered_model_alias", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-c")
    monkeypatch.undo()
    c = client(mlflow_url)
    assert c.get_registered_model(name).name == name
    assert [v.version for v in c.search_model_versions(f"name = '{name}'")] == concurrent


def test_a_retry_leaves_an_incomplete_version_another_attempt_is_still_writing(
    mlflow_url: str,
    random_model_dir: Path,
    features_dir: Path,
    state_dir: Path,
):
    """An incomplete version of the same run key whose MLflow run is RUNNING may be another
    attempt's, mid-way: it is skipped, not deleted; once its run has ended it is abandoned and
    the next attempt removes it."""
    from aicrush.registry import REGISTRATION_TAG

    name = "incomplete-while-running"
    writing = _other_attempt_version(mlflow_url, name, "kfp-run-w", complete=False)
    retried = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-w")
    assert retried.created and retried.version != writing
    c = client(mlflow_url)
    versions = {v.version: v for v in c.search_model_versions(f"name = '{name}'")}
    assert versions[writing].tags[REGISTRATION_TAG] == "incomplete"
    assert versions[retried.version].tags[REGISTRATION_TAG] == "complete"
    assert c.get_registered_model(name).aliases == {CHALLENGER: retried.version}

    c.set_terminated(versions[writing].run_id, "KILLED")  # that attempt's pod went away
    again = _register_at(mlflow_url, name, random_model_dir, features_dir, state_dir, "kfp-run-w")
    assert (again.version, again.created) == (retried.version, False)
    assert [v.version for v in c.search_model_versions(f"name = '{name}'")] == [retried.version]


def test_serve_explains_an_empty_registered_model(state_dir: Path):
    """A registered model without versions (left by an older interrupted registration)."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    client(local_tracking_uri(state_dir)).create_registered_model("aicrush-code-language")
    result = CliRunner().invoke(app, ["serve", "--state-dir", str(state_dir)])
    assert result.exit_code == 2
    assert "registered model 'aicrush-code-language'" in result.output
    assert "has no versions (a registration stopped before completing one)" in result.output
    assert "versions none" not in result.output


# --------------------------------------------------------------- MLflow artifacts in gs://
# (the fixture gcs_refusing_anonymous: tests/gcs_refusing.py, through tests/conftest.py)


def test_mlflow_artifacts_in_gs_without_credentials_name_the_location_and_register_nothing(
    random_model_dir: Path, features_dir: Path, state_dir: Path, gcs_refusing_anonymous: None
):
    from aicrush.errors import CredentialsError

    uri = local_tracking_uri(state_dir)
    c = client(uri)
    c.create_experiment("aicrush", artifact_location="gs://team-mlflow/aicrush")
    with pytest.raises(CredentialsError) as err:
        _register(random_model_dir, features_dir, state_dir)
    message = str(err.value)
    # MLflow falls back to an anonymous client, whose request Google answers with 401: google.auth
    # raised "InvalidOperation: Anonymous credentials cannot be refreshed" (a DefaultCredentialsError).
    assert "no Google credentials found for gs://team-mlflow/aicrush/" in message
    assert "gcloud auth application-default login" in message
    assert c.search_registered_models() == []


def test_downloading_a_version_in_gs_without_credentials_names_it(
    state_dir: Path, gcs_refusing_anonymous: None
):
    from aicrush.errors import CredentialsError

    uri = local_tracking_uri(state_dir)
    c = client(uri)
    c.create_registered_model("m")
    c.create_model_version("m", source="gs://team-mlflow/aicrush/1/abc/artifacts/model")
    with pytest.raises(CredentialsError, match=r"for m version 1 \(gs://team-mlflow/aicrush/"):
        download_model(uri, "m", version=1, dst=state_dir / "dl")


def test_serving_a_version_in_gs_without_credentials_names_it(
    state_dir: Path, gcs_refusing_anonymous: None
):
    """`aicrush serve models:/m/1` downloads through MLflow itself: the same CredentialsError,
    which the command prints as one line (exit 2), not a traceback."""
    from aicrush.errors import CredentialsError
    from serving.server import resolve_model_source

    uri = local_tracking_uri(state_dir)
    c = client(uri)
    c.create_registered_model("m")
    c.create_model_version("m", source="gs://team-mlflow/aicrush/1/abc/artifacts/model")
    with pytest.raises(CredentialsError, match=r"no Google credentials found for models:/m/1"):
        resolve_model_source("models:/m/1", tracking_uri=uri)
