"""register_model against a real MLflow store: lineage, idempotent retries, all or nothing."""

from __future__ import annotations

import json
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
    assert len(c.search_registered_models()) == 1  # the store is the one the step wrote to
    assert c.search_model_versions("name = 'aicrush-code-language'") == []
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
