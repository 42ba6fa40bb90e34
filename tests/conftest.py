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

#: The test files that take longest (seconds measured with ``--durations`` on the 2-core CI
#: machine, 2026-12-07), longest first. ``make test`` runs two pytest-xdist workers that take
#: whole files in collection order (``--dist loadfile --no-loadscope-reorder``): starting these
#: first keeps one long file from running alone at the end. Only a schedule: a file missing
#: here runs after them, in its usual order.
LONGEST_FIRST = (
    "tests/cluster/test_emulated_cluster.py",  # 270 s
    "tests/pipelines/test_first_hour.py",  # 180 s
    "tests/cluster/test_emulated_training.py",  # 100 s
    "tests/pipelines/test_e2e_local.py",  # 85 s
    "tests/components/test_train_worker.py",  # 55 s
    "tests/rollout/test_local_rollout.py",  # 50 s
    "tests/cluster/test_training_pod_resume.py",  # 40 s
    "tests/cluster/test_trainjob_task.py",  # 40 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of LONGEST_FIRST first, in that order; every other file after, as collected."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    root = Path(str(config.rootpath))

    def key(item: pytest.Item) -> int:
        path = Path(str(item.path)).relative_to(root).as_posix()
        return rank.get(path, len(LONGEST_FIRST))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept


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
