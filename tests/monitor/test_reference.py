"""Loading a version's reference sample from the registry (``load_reference``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicrush.errors import CredentialsError
from aicrush.registry import client
from aicrush.state import local_tracking_uri
from serving.monitor.reference import REFERENCE_ARTIFACT, load_reference
from tests.gcs_refusing import gcs_refusing_anonymous  # noqa: F401


def test_a_reference_in_gs_without_credentials_names_it(
    state_dir: Path,
    gcs_refusing_anonymous: None,  # noqa: F811
) -> None:
    """The run's artifacts are in gs:// and there are no Google credentials: one
    CredentialsError naming the reference and the version, not google.auth's traceback."""
    uri = local_tracking_uri(state_dir)
    c = client(uri)
    experiment = c.create_experiment("aicrush", artifact_location="gs://team-mlflow/aicrush")
    run = c.create_run(experiment)
    c.create_registered_model("m")
    c.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    with pytest.raises(
        CredentialsError,
        match=f"no Google credentials found for {REFERENCE_ARTIFACT} of models:/m/1 \\(run ",
    ):
        load_reference("mlflow", "m", "1", tracking_uri=uri)


def test_a_versions_reference_is_read_from_its_runs_artifacts(
    state_dir: Path, reference, tmp_path: Path
) -> None:
    """The same download from a local artifact store: the bytes register_model logged."""
    uri = local_tracking_uri(state_dir)
    c = client(uri)
    run = c.create_run(c.create_experiment("aicrush"))
    local = tmp_path / "reference.parquet"
    local.write_bytes(reference.parquet)
    c.log_artifact(run.info.run_id, str(local), artifact_path="reference")
    c.create_registered_model("m")
    c.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    loaded = load_reference("mlflow", "m", "1", tracking_uri=uri)
    assert loaded.sha256 == reference.sha256 and loaded.model_version == "1"
    assert loaded.source == f"models:/m/1 (run {run.info.run_id})"


def test_a_version_without_a_run_has_no_reference(state_dir: Path) -> None:
    uri = local_tracking_uri(state_dir)
    c = client(uri)
    c.create_registered_model("m")
    c.create_model_version("m", source=str(state_dir / "model"))
    with pytest.raises(ValueError, match=r"models:/m/1 has no MLflow run.*pass a Parquet"):
        load_reference("mlflow", "m", "1", tracking_uri=uri)
