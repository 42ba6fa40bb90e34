"""engineer_features: clean splits in, Feast-backed feature splits out (real local Feast stores)."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aicrush.config import FeaturesConfig, build_config
from aicrush.errors import DataError
from components.engineer_features import CLEAN_COLUMNS, SPLITS, engineer
from features.file_features import FEATURE_NAMES, compute_file_features

os.environ["FEAST_USAGE"] = "False"

SNIPPETS = {
    "Python": "import sys\n\ndef f{i}(x):\n    # double\n    return x * {i}\n",
    "C": "#include <stdio.h>\nint f{i}(int x) {{\n\treturn x * {i};\n}}\n",
    "SQL": "-- query {i}\nSELECT a, b\nFROM t{i}\nWHERE a > {i};\n",
}


def _clean_dir(path: Path) -> Path:
    """Three languages over three splits; one file's content repeats in two splits."""
    path.mkdir(parents=True)
    rows = {split: [] for split in SPLITS}
    for lang, template in SNIPPETS.items():
        for i in range(5):
            text = template.format(i=i)
            split = SPLITS[0] if i < 3 else SPLITS[i - 2]
            rows[split].append((f"repo-{lang}-{i % 2}", f"src/f{i}.{lang.lower()}", lang, text))
    rows["test"].append(("repo-copy", "vendored/f0.py", "Python", SNIPPETS["Python"].format(i=0)))
    for split, items in rows.items():
        frame = pd.DataFrame(items, columns=["repository", "path", "language", "text"])
        frame["sha256"] = [hashlib.sha256(t.encode()).hexdigest() for t in frame["text"]]
        frame["size"] = frame["text"].str.len()
        frame[list(CLEAN_COLUMNS)].to_parquet(path / f"{split}.parquet", index=False)
    return path


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _clean_dir(tmp_path_factory.mktemp("clean") / "clean")


def test_engineer_writes_the_feature_splits(
    clean_dir: Path, state_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "features"
    result = engineer(clean_dir, FeaturesConfig(), out, state_dir)

    assert result.repo_path == str(state_dir.resolve() / "feast")
    for split in SPLITS:
        clean = pd.read_parquet(clean_dir / f"{split}.parquet")
        frame = pd.read_parquet(out / f"{split}.parquet")
        assert list(frame.columns) == [*CLEAN_COLUMNS, "file_id", *FEATURE_NAMES]
        assert len(frame) == len(clean) == result.rows[split]
        pd.testing.assert_frame_equal(frame[list(CLEAN_COLUMNS)], clean)  # same rows, same order
        assert (frame["file_id"] == clean["sha256"]).all()
        expected = compute_file_features(clean["text"].tolist())
        np.testing.assert_array_equal(frame[list(FEATURE_NAMES)].to_numpy(), expected.to_numpy())
    assert result.rows == {"train": 9, "val": 3, "test": 4}
    assert result.distinct_files == 15  # the vendored copy shares its sha256

    meta = json.loads((out / "features.json").read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["project"] == "aicrush" and meta["feature_service"] == "file_statistics_training"
    assert meta["repo_path"] == result.repo_path and meta["rows"] == result.rows

    # The online store holds what training saw.
    from features import store as fs

    test = pd.read_parquet(out / "test.parquet")
    online = fs.online_features(fs.open_store(Path(result.repo_path)), test["file_id"].tolist())
    np.testing.assert_array_equal(
        online[list(FEATURE_NAMES)].to_numpy(np.float32), test[list(FEATURE_NAMES)].to_numpy()
    )


def test_component_runs_through_kfp_local(clean_dir: Path, tmp_path: Path) -> None:
    """The @dsl.component in a kfp.local subprocess: custom repo folder, no materialization."""
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from components.engineer_features import engineer_features

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    repo = tmp_path / "repo"
    config = build_config({"features": {"repo_path": str(repo), "materialize": False}}).to_dict()

    @dsl.pipeline
    def features_only(config: dict, state_dir: str) -> Dataset:
        clean = dsl.importer(artifact_uri=str(clean_dir), artifact_class=Dataset, reimport=False)
        return engineer_features(config=config, state_dir=state_dir, clean=clean.output).outputs[
            "features"
        ]

    run = features_only(config=config, state_dir=str(tmp_path / "state"))
    features = Path(run.output.path)
    meta = json.loads((features / "features.json").read_text())
    assert meta["repo_path"] == str(repo) and meta["materialized"] is False
    assert meta["rows"] == {"train": 9, "val": 3, "test": 4}
    assert (repo / "data" / "file_statistics.parquet").is_file()
    assert pd.read_parquet(features / "val.parquet").columns[
        -len(FEATURE_NAMES) :
    ].tolist() == list(FEATURE_NAMES)


def test_missing_split_fails_clearly(tmp_path: Path, state_dir: Path) -> None:
    (tmp_path / "clean").mkdir()
    with pytest.raises(DataError, match=r"train\.parquet is missing"):
        engineer(tmp_path / "clean", FeaturesConfig(), tmp_path / "out", state_dir)


def test_a_registry_in_gs_without_credentials_names_the_setting(
    clean_dir: Path,
    state_dir: Path,
    tmp_path: Path,
    gcs_refusing_anonymous: None,
) -> None:
    """Feast reads the gs:// registry with its own GCS client: without Google credentials that
    is one CredentialsError naming features.registry_path, not google.auth's InvalidOperation."""
    from aicrush.errors import CredentialsError

    cfg = FeaturesConfig(registry_path="gs://team-feast/aicrush/registry.pb")
    with pytest.raises(
        CredentialsError,
        match=r"no Google credentials found for features.registry_path gs://team-feast/aicrush/",
    ):
        engineer(clean_dir, cfg, tmp_path / "out", state_dir)
