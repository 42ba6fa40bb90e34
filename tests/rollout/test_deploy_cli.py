"""`aicrush deploy` with a version or alias that is not registered: exit 2 with the versions and
aliases there are, as `aicrush serve` does (the `aicrush` command, in its own process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.test_first_hour import aicrush

MODEL = "aicrush-code-language"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder whose ./.aicrush store holds versions 1 and 2, alias challenger -> v2."""
    from mlflow import MlflowClient

    from aicrush.state import local_tracking_uri

    state = tmp_path / ".aicrush"
    state.mkdir()
    client = MlflowClient(tracking_uri=local_tracking_uri(state))
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=str(tmp_path / "model"))
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--version", "99"], f"{MODEL} has no version '99'"),
        (["--version", "champion"], f"{MODEL} has no alias 'champion'"),
    ],
)
def test_deploy_of_a_missing_version_lists_the_versions_and_exits_2(project, args, says):
    result = aicrush(project, "deploy", "--no-watch", *args, timeout=120)
    assert result.returncode == 2, result.stdout
    assert says in result.stdout
    assert "versions 1, 2; aliases challenger -> v2" in result.stdout
    assert "Traceback" not in result.stdout and len(result.stdout.strip().splitlines()) == 1


def test_status_where_there_is_no_state_says_so_and_writes_nothing(tmp_path: Path):
    """It created ./.aicrush/mlflow.db and reported 'champion none' in any folder."""
    result = aicrush(tmp_path, "status", timeout=120)
    assert result.returncode == 1, result.stdout
    assert result.stdout.strip() == (
        f"error: no aicrush state at {tmp_path / '.aicrush'}: run `aicrush run` (or `make demo`) "
        "here first, or point --state-dir (or $AICRUSH_HOME) at the folder a run used"
    )
    assert not (tmp_path / ".aicrush").exists()
    # a state folder that is there (say, made for a first run) is read as before
    (tmp_path / ".aicrush").mkdir()
    result = aicrush(tmp_path, "status", timeout=120)
    assert result.returncode == 0 and "champion  none" in result.stdout, result.stdout


def test_status_reads_a_registry_that_is_there(project: Path):
    result = aicrush(project, "status", timeout=120)
    assert result.returncode == 0, result.stdout
    assert "challenger v2" in result.stdout
