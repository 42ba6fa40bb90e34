"""The reference sample a model version is monitored against, and its sha256.

``register_model`` logs ``reference/reference.parquet`` (columns ``FEATURE_NAMES`` + ``label``,
``prediction``, ``score``, from the validation split) on the model version's MLflow run. The
monitor loads it from there (``models:/NAME/VERSION`` or ``mlflow``) or from a Parquet file. The
hash is of the Parquet bytes, so the same file gives the same hash before and after a restart.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aicrush.errors import google_credentials
from serving.monitor.drift import DriftSettings

REFERENCE_ARTIFACT = "reference/reference.parquet"


@dataclass(frozen=True)
class Reference:
    """A reference sample for one model name and version."""

    model_name: str
    model_version: str
    frame: pd.DataFrame
    sha256: str
    source: str
    parquet: bytes

    @classmethod
    def from_parquet_bytes(
        cls, data: bytes, model_name: str, model_version: str, source: str
    ) -> Reference:
        frame = pd.read_parquet(io.BytesIO(data))
        missing = [c for c in DriftSettings().columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"reference {source} lacks columns {missing}; a reference holds FEATURE_NAMES and "
                f"'prediction' (register_model writes one to {REFERENCE_ARTIFACT})"
            )
        if frame.empty:
            raise ValueError(f"reference {source} has no rows")
        digest = hashlib.sha256(data).hexdigest()
        return cls(model_name, model_version, frame, digest, source, data)


def reference_from_frame(
    frame: pd.DataFrame, model_name: str, model_version: str, source: str = "frame"
) -> Reference:
    """Build a reference from a frame (tests, benchmarks): serialized to Parquet, then hashed."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return Reference.from_parquet_bytes(buffer.getvalue(), model_name, model_version, source)


def load_reference(
    source: str | Path,
    model_name: str,
    model_version: str,
    tracking_uri: str | None = None,
) -> Reference:
    """Load the reference for ``model_name`` / ``model_version``.

    ``source`` is a Parquet path, or ``mlflow`` to read ``reference/reference.parquet`` from the
    run of the registered version (``tracking_uri`` or the MLflow default; ``model_version`` may
    be a number or an alias such as ``champion``), or ``models:/NAME/VERSION``.
    """
    text = str(source)
    if text == "mlflow" or text.startswith("models:/"):
        if text.startswith("models:/"):
            model_name, _, model_version = text[len("models:/") :].partition("/")
        return _load_from_mlflow(model_name, model_version, tracking_uri)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"reference {path} not found: pass a Parquet file, 'mlflow' (the registered version's "
            f"{REFERENCE_ARTIFACT}) or models:/NAME/VERSION"
        )
    return Reference.from_parquet_bytes(path.read_bytes(), model_name, model_version, str(path))


def _load_from_mlflow(model_name: str, model_version: str, tracking_uri: str | None) -> Reference:
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if model_version.isdigit():
        version = client.get_model_version(model_name, model_version)
    else:
        version = client.get_model_version_by_alias(model_name, model_version)
    if not version.run_id:
        raise ValueError(
            f"models:/{model_name}/{version.version} has no MLflow run, so no {REFERENCE_ARTIFACT}"
            " (register_model logs one with each version): pass a Parquet reference"
        )
    source = f"models:/{model_name}/{version.version} (run {version.run_id})"
    # From the run's own artifact location, not runs:/<id>: that one turns every download error,
    # no Google credentials for gs:// included, into "please ensure that the path is correct".
    artifacts = client.get_run(version.run_id).info.artifact_uri.rstrip("/")
    with google_credentials(f"{REFERENCE_ARTIFACT} of {source}"):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{artifacts}/{REFERENCE_ARTIFACT}", tracking_uri=tracking_uri
        )
    data = Path(local).read_bytes()
    return Reference.from_parquet_bytes(data, model_name, str(version.version), source)
