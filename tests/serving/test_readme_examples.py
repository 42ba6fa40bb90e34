"""The README's curl examples (V1 and V2), run with curl against a model trained here and served
on loopback by the real model server: the labels after ``# ->`` must come back.

The model is the ``tiny`` preset (only the thread count changed) trained on a small fixed corpus
made here: five languages, three repositories each, split by repository like validate_dataset
does. The same model must pass the default gate (``EvaluateConfig()``), which also checks the
floor: macro-F1 >= 0.9 on the test repositories. Why 0.9: the five synthetic languages differ in
keywords and punctuation, the linear baseline scores 1.0 on them, and a model that learned its
job reaches 1.0 too; chance is 0.2, so 0.9 leaves room for one or two borderline files only.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import EvaluateConfig, build_config
from components.evaluate_model import evaluate
from components.train_model import train
from tests.components.test_train_model import make_split
from tests.serving import REPO_ROOT, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = REPO_ROOT / "README.md"
REGISTERED_NAME = "aicrush-code-language"


def readme_examples() -> list[tuple[str, list[str]]]:
    """(curl command, expected labels) for each ``curl`` in the README's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    examples: list[tuple[str, list[str]]] = []
    for block in blocks:
        for chunk in block.split("\n\n"):
            if not chunk.startswith("curl "):
                continue
            command, _, rest = chunk.partition("\n# -> ")
            labels = [x.strip() for x in rest.splitlines()[0].split(",")]
            examples.append((command.strip(), labels))
    return examples


def corpus(root: Path) -> Path:
    """Train / val / test with disjoint repositories: each language has repositories repo0-2;
    repo0 and repo1 train, repo2 is split between val and test."""
    frame = pd.concat([make_split(18, seed) for seed in (1, 2)], ignore_index=True)
    frame = frame.drop_duplicates("sha256").reset_index(drop=True)
    held_out = frame[frame["repository"] == "repo2"]
    splits = {
        "train": frame[frame["repository"] != "repo2"],
        "val": held_out.iloc[::2],
        "test": held_out.iloc[1::2],
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        split.reset_index(drop=True).to_parquet(root / f"{name}.parquet")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("readme-model")
    features = corpus(root / "features")
    cfg = build_config({"train": {"num_threads": 1}}, preset="tiny")
    train(features, cfg.train, root / "model", root / "ckpt", preset="tiny")
    return root / "model", features


def test_readme_has_a_v1_and_a_v2_example() -> None:
    commands = [c for c, _ in readme_examples()]
    assert any("/v1/models/" in c for c in commands) and any("/v2/models/" in c for c in commands)


def test_tiny_model_beats_the_floor_and_passes_the_default_gate(trained) -> None:
    model_dir, features = trained
    result = evaluate(model_dir, features, EvaluateConfig())
    assert result.metrics["macro_f1"] >= 0.9, result.per_class
    assert result.passed, result.reason
    assert result.baseline is not None and "baseline" in result.reason


def test_readme_curl_examples_give_the_documented_labels(trained, tmp_path: Path) -> None:
    model_dir, _ = trained
    examples = readme_examples()
    with running_server(model_dir, tmp_path) as server:
        for command, labels in examples:
            # The README's host, port and registered name -> this test's server.
            cmd = command.replace("http://127.0.0.1:8080", server.url)
            cmd = cmd.replace(f"/models/{REGISTERED_NAME}", f"/models/{server.name}")
            argv = shlex.split(cmd.replace("\\\n", " "))
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
            body = json.loads(out.stdout)
            if "predictions" in body:
                got = [p["label"] for p in body["predictions"]]
            else:
                got = next(o["data"] for o in body["outputs"] if o["name"] == "label")
            assert got == labels, (command, body)
