"""Shared fixtures. Tests never touch the user's ./.aicrush: each gets its own state dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gcs_refusing import gcs_refusing_anonymous  # noqa: F401  (a shared fixture)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty aicrush state dir (MLflow store, Feast stores, pipeline root) for one test."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("AICRUSH_HOME", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight aicrush model folder (labels C, CSS, JavaScript, Python, Shell)."""
    from tests.model_factory import build_random_model

    return build_random_model(tmp_path_factory.mktemp("random-model") / "model")


@pytest.fixture(scope="session")
def random_model_dir_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second random model with other weights (a 'challenger' for canary and drift tests)."""
    from tests.model_factory import build_random_model

    return build_random_model(tmp_path_factory.mktemp("random-model-v2") / "model", seed=1)
