"""Tests of components.evaluate_model: metrics, gate, champion comparison, model card, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import EvaluateConfig
from components.evaluate_model import (
    compute_metrics,
    evaluate,
    gate,
    render_model_card,
    resolve_champion,
    write_outputs,
)
from tests.components.test_train_model import make_split
from tests.model_factory import build_random_model

# The random test models score near chance: tests of other behaviour switch the floors off.
OPEN = EvaluateConfig(min_macro_f1=0.0, baseline_gate=False)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-features")
    for i, split in enumerate(("train", "val", "test")):
        make_split(6, 100 + i).to_parquet(root / f"{split}.parquet")
    return root


def test_metrics_match_a_hand_computed_example() -> None:
    y_true = ["A", "A", "A", "B", "B", "C"]
    y_pred = ["A", "A", "B", "B", "C", "C"]
    metrics, per_class, (labels, matrix) = compute_metrics(y_true, y_pred)
    # A: tp=2 fp=0 fn=1 -> P=1, R=2/3, F1=0.8; B: tp=1 fp=1 fn=1 -> P=R=F1=0.5;
    # C: tp=1 fp=1 fn=0 -> P=0.5, R=1, F1=2/3.
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert per_class["A"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert per_class["C"]["precision"] == pytest.approx(0.5) and per_class["C"]["recall"] == 1.0
    assert labels == ["A", "B", "C"]
    assert matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_predicted_label_absent_from_test_is_in_the_matrix_not_the_macro_average() -> None:
    metrics, per_class, (labels, matrix) = compute_metrics(["A", "B"], ["A", "Z"])
    assert labels == ["A", "B", "Z"] and matrix == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert set(per_class) == {"A", "B"}
    assert metrics["macro_f1"] == pytest.approx(0.5)  # (1 + 0) / 2: Z has no test rows


@pytest.mark.parametrize(
    ("f1", "champion", "margin", "floor", "passed", "words"),
    [
        (0.80, None, 0.0, 0.5, True, "no champion"),
        (0.40, None, 0.0, 0.5, False, "below evaluate.min_macro_f1"),
        (0.80, 0.70, 0.05, 0.0, True, "beats the champion"),
        (0.74, 0.70, 0.05, 0.0, False, "does not exceed"),
        # equal to champion + margin is not enough
        (0.75, 0.70, 0.05, 0.0, False, "does not exceed"),
        (0.70, 0.70, 0.0, 0.0, False, "does not exceed"),
        (
            0.69,
            0.70,
            -0.02,
            0.0,
            True,
            "beats the champion",
        ),  # a negative margin tolerates a small loss
        (0.90, 0.70, 0.0, 0.95, False, "below evaluate.min_macro_f1"),
    ],
)
def test_gate(
    f1: float, champion: float | None, margin: float, floor: float, passed: bool, words: str
) -> None:
    ok, reason = gate(f1, champion, EvaluateConfig(promotion_margin=margin, min_macro_f1=floor))
    assert ok is passed and words in reason
    assert "not promoted" not in reason  # callers say the outcome; the reason does not repeat it


@pytest.mark.parametrize(
    ("f1", "baseline", "margin", "passed"),
    [
        (0.70, 0.72, -0.05, True),  # a loss within the margin is tolerated
        (0.66, 0.72, -0.05, False),  # below the baseline by more than the margin
        (0.75, 0.72, 0.05, False),  # the margin may demand a win over the baseline
        (0.78, 0.72, 0.05, True),
        (0.10, 0.72, None, True),  # baseline_gate false: no baseline rule (floor 0 here)
    ],
)
def test_gate_against_the_baseline(
    f1: float, baseline: float, margin: float | None, passed: bool
) -> None:
    if margin is None:
        cfg = EvaluateConfig(min_macro_f1=0.0, baseline_gate=False)
    else:
        cfg = EvaluateConfig(min_macro_f1=0.0, baseline_margin=margin)
    ok, reason = gate(f1, None, cfg, baseline_macro_f1=baseline)
    assert ok is passed
    if margin is not None:
        assert "evaluate.baseline_margin" in reason and f"{baseline:.4f}" in reason


def test_evaluate_model_without_champion(
    random_model_dir: Path, features_dir: Path, tmp_path: Path
) -> None:
    result = evaluate(random_model_dir, features_dir, OPEN)
    test = pd.read_parquet(features_dir / "test.parquet")
    assert result.passed and result.champion_metrics is None
    assert result.metrics["n_test"] == len(test) == 30
    assert 0.0 <= result.metrics["macro_f1"] <= 1.0
    assert set(result.per_class) == {"C", "CSS", "JavaScript", "Python", "Shell"}
    labels, matrix = result.confusion
    assert sum(map(sum, matrix)) == len(test) and len(matrix) == len(labels)
    preds = result.predictions
    assert list(preds.columns) == [
        "file_id",
        "repository",
        "path",
        "label",
        "prediction",
        "score",
        "baseline_prediction",
    ]
    assert len(preds) == len(test) and (preds["path"] == test["path"]).all()
    assert (preds["label"] == test["language"]).all()
    assert result.metrics["accuracy"] == pytest.approx(
        float((preds["label"] == preds["prediction"]).mean())
    )
    assert result.data_counts["train"]["Python"] == 6

    out = write_outputs(result, tmp_path / "out")
    card = (out / "model_card.html").read_text()
    for text in (
        "Confusion matrix",
        "Per class",
        "macro_f1",
        "JavaScript",
        "Training settings",
        "PASS",
        "baseline",
        "LinearSVC",
    ):
        assert text in card
    assert len(pd.read_parquet(out / "predictions.parquet")) == len(test)


def test_champion_gate_same_model_is_not_promoted(
    random_model_dir: Path, features_dir: Path
) -> None:
    result = evaluate(random_model_dir, features_dir, OPEN, champion_dir=random_model_dir)
    assert result.champion_metrics == result.metrics and result.label_comparison is None
    assert not result.passed and "does not exceed the champion" in result.reason
    tolerant = evaluate(
        random_model_dir,
        features_dir,
        OPEN.model_copy(update={"promotion_margin": -0.01}),
        random_model_dir,
    )
    assert tolerant.passed
    assert "FAIL" in render_model_card(result)


def test_champion_sharing_one_language_is_refused(
    random_model_dir: Path, features_dir: Path, tmp_path: Path
) -> None:
    # The champion knows only Python and Go: one shared language with test files, no common task.
    champion = build_random_model(tmp_path / "champ", labels=("Go", "Python"), seed=3)
    result = evaluate(random_model_dir, features_dir, OPEN, champion_dir=champion)
    assert result.champion_metrics is not None  # still shown, on the whole test split
    assert result.champion_metrics["macro_f1"] <= 0.2 + 1e-9
    assert not result.passed
    assert result.label_comparison is not None and result.label_comparison["rule"] == "refused"
    assert result.label_comparison["only_champion"] == ["Go"]
    assert "label sets differ" in result.reason and "refused" in result.reason


def test_champion_with_other_labels_is_compared_on_the_shared_languages(
    random_model_dir: Path, features_dir: Path, tmp_path: Path
) -> None:
    labels = ("C", "CSS", "Go", "Python")  # shares C, CSS, Python with the challenger
    champion = build_random_model(tmp_path / "champ", labels=labels, seed=4)
    result = evaluate(random_model_dir, features_dir, OPEN, champion_dir=champion)
    comparison = result.label_comparison
    assert comparison is not None and comparison["rule"] == "shared_labels"
    assert comparison["shared"] == ["C", "CSS", "Python"]
    assert comparison["only_challenger"] == ["JavaScript", "Shell"]
    assert comparison["only_champion"] == ["Go"]
    test = pd.read_parquet(features_dir / "test.parquet")
    shared = test["language"].isin(["C", "CSS", "Python"])
    assert comparison["n_test_compared"] == int(shared.sum()) == 18
    # Recomputed by hand on the shared rows, from the challenger's own predictions.
    preds = result.predictions[shared.to_numpy()]
    mine = compute_metrics(preds["label"].tolist(), preds["prediction"].tolist())[0]["macro_f1"]
    assert comparison["challenger_macro_f1"] == pytest.approx(mine)
    assert "compared on the 3 shared languages (18 test files)" in result.reason
    beaten = comparison["challenger_macro_f1"] > comparison["champion_macro_f1"]
    assert result.passed is beaten
    assert "Champion with another label set" in render_model_card(result)


def test_test_language_unknown_to_model_counts_as_wrong(
    random_model_dir: Path, tmp_path: Path
) -> None:
    test = pd.concat(
        [make_split(3, 7), make_split(3, 8, languages=("Python",)).assign(language="Ruby")]
    )
    test.to_parquet(tmp_path / "test.parquet")
    make_split(3, 9).to_parquet(tmp_path / "train.parquet")
    result = evaluate(random_model_dir, tmp_path, OPEN)
    assert result.per_class["Ruby"]["recall"] == 0.0 and result.per_class["Ruby"]["support"] == 3
    assert "unknown to the model" in result.reason and "Ruby" in result.reason


def test_bad_inputs_fail_clearly(
    random_model_dir: Path, features_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"test\.parquet is missing"):
        evaluate(random_model_dir, tmp_path, EvaluateConfig())
    make_split(1, 0).iloc[:0].to_parquet(tmp_path / "test.parquet")
    with pytest.raises(ValueError, match="no rows"):
        evaluate(random_model_dir, tmp_path, EvaluateConfig())
    with pytest.raises(FileNotFoundError, match="no aicrush model"):
        evaluate(tmp_path, features_dir, EvaluateConfig())
    assert resolve_champion("") is None
    assert resolve_champion(str(random_model_dir)) == random_model_dir


def test_a_champion_in_gs_without_credentials_names_it(
    state_dir: Path,
    gcs_refusing_anonymous: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evaluate downloads the champion before register ever runs: a registry whose artifacts are
    in gs:// and no Google credentials is one CredentialsError naming the champion (MLflow's
    anonymous fallback raised google.auth's InvalidOperation)."""
    from aicrush.errors import CredentialsError
    from aicrush.registry import CHAMPION, client
    from aicrush.state import local_tracking_uri

    uri = local_tracking_uri(state_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as the pipeline gives the step
    c = client(uri)
    c.create_registered_model("m")
    c.create_model_version("m", source="gs://team-mlflow/aicrush/1/abc/artifacts/model")
    c.set_registered_model_alias("m", CHAMPION, "1")
    with pytest.raises(CredentialsError, match=r"no Google credentials found for the champion "):
        resolve_champion(f"models:/m@{CHAMPION}")


def test_component_glue_with_kfp_artifacts(
    features_dir: Path, random_model_dir: Path, tmp_path: Path
) -> None:
    """run_train_step / run_evaluate_step as the components call them, on real kfp artifact objects."""
    from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

    from aicrush.config import build_config
    from components.evaluate_model import evaluate_model, run_evaluate_step
    from components.train_model import default_checkpoint_dir, run_train_step, train_model

    config = build_config(
        {
            "train": {
                "max_steps": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_layers": 1,
                "num_threads": 1,
            },
            "evaluate": {"min_macro_f1": 0.0},
        },
        preset="tiny",
    ).to_dict()
    task = tmp_path / "run" / "train_model"
    features, model, metrics = (
        Dataset(uri=str(features_dir)),
        Model(uri=str(task / "model")),
        Metrics(uri=str(task / "metrics")),
    )
    run_train_step(config, features, model, metrics, "")
    assert default_checkpoint_dir(model.path) == tmp_path / "run" / "checkpoints" / "train_model"
    assert (tmp_path / "run" / "checkpoints" / "train_model" / "checkpoint-2").is_dir()
    assert metrics.metadata["steps"] == 2.0 and model.metadata["preset"] == "tiny"

    eval_task = tmp_path / "run" / "evaluate_model"
    out_metrics, confusion = (
        Metrics(uri=str(eval_task / "metrics")),
        ClassificationMetrics(uri=str(eval_task / "confusion")),
    )
    card = HTML(uri=str(eval_task / "model_card"))
    predictions = Dataset(uri=str(eval_task / "predictions"))
    outputs = run_evaluate_step(
        config, model, features, str(random_model_dir), out_metrics, confusion, card, predictions
    )
    assert isinstance(outputs.passed, bool) and outputs.reason and 0.0 <= outputs.macro_f1 <= 1.0
    assert "champion_macro_f1" in out_metrics.metadata and "macro_f1" in out_metrics.metadata
    assert len(confusion.metadata["confusionMatrix"]["rows"]) == 5
    assert "<html>" in Path(card.path).read_text()
    # its own output: in the cluster a file beside the card would not be uploaded
    table = pd.read_parquet(predictions.path)
    assert predictions.metadata["rows"] == len(table) > 0
    assert {"label", "prediction", "baseline_prediction"} <= set(table.columns)
    assert {p.name for p in eval_task.iterdir()} <= {
        "confusion",
        "metrics",
        "model_card",
        "predictions",
    }

    assert set(train_model.component_spec.inputs) == {
        "config",
        "features",
        "checkpoint_dir",
        "run_id",
    }
    assert set(evaluate_model.component_spec.outputs) >= {
        "predictions",
        "metrics",
        "confusion",
        "model_card",
        "passed",
        "reason",
        "macro_f1",
    }


def test_baseline_is_fitted_on_exactly_the_train_split(
    random_model_dir: Path, tmp_path: Path
) -> None:
    # val holds a language train lacks (Ruby): a baseline fitted on more than train would know it.
    train = make_split(4, 20, languages=("C", "Python", "Shell"))
    train = pd.concat([train, make_split(2, 21, languages=("CSS",))], ignore_index=True)
    val = make_split(3, 22).assign(language="Ruby")
    test = make_split(3, 23)
    for name, frame in (("train", train), ("val", val), ("test", test)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
    result = evaluate(random_model_dir, tmp_path, OPEN)
    baseline = result.baseline
    assert baseline is not None
    assert baseline.train_counts == {"C": 4, "CSS": 2, "Python": 4, "Shell": 4}
    assert baseline.n_train == len(train) == 14
    assert set(baseline.predictions) <= {"C", "CSS", "Python", "Shell"}  # never Ruby
    assert len(baseline.predictions) == len(test) == 15
    assert baseline.metrics["n_test"] == 15.0
    # JavaScript is in test but not train: the baseline cannot get it right.
    assert baseline.per_class["JavaScript"]["recall"] == 0.0
    summary = baseline.summary()
    assert summary["n_train"] == 14 and {"accuracy", "macro_f1", "per_class_f1"} <= set(summary)
    assert (result.predictions["baseline_prediction"] == baseline.predictions).all()


def test_default_gate_refuses_a_model_below_min_macro_f1(
    random_model_dir: Path, features_dir: Path
) -> None:
    cfg = EvaluateConfig()
    assert cfg.min_macro_f1 == 0.5 and cfg.baseline_margin == -0.05
    result = evaluate(random_model_dir, features_dir, cfg)
    assert result.metrics["macro_f1"] < cfg.min_macro_f1  # a random model: near chance (0.2)
    assert not result.passed and "below evaluate.min_macro_f1" in result.reason
    # The synthetic languages differ in keywords: the baseline separates them (well above 0.5).
    assert result.baseline is not None and result.baseline.metrics["macro_f1"] >= 0.9
