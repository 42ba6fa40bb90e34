"""The ``evaluate_model`` step: score a trained model on the test split and decide the gate.

Metrics (accuracy, macro-F1, per-class precision/recall/F1, confusion matrix) are computed over
the languages of the test split with scikit-learn. Every evaluation also fits the linear
baseline (``components.baseline``: character n-grams + a linear SVM) on exactly the ``train``
split and scores it on the same ``test`` split, so each run says whether the model beats it.

The gate is data, not an exception. The challenger passes when all of these hold:

1. its macro-F1 is at least ``evaluate.min_macro_f1`` (an absolute floor);
2. its macro-F1 is at least the baseline's + ``evaluate.baseline_margin`` (same split, same
   run; ``null`` switches this rule off);
3. when a champion is given: its macro-F1 exceeds the champion's + ``evaluate.promotion_margin``.

**Champions with another label set.** Labels are matched by name. When the champion's labels
differ from the challenger's, the two are not scored as if they solved the same task: rule 3
compares them on the shared task, the test files whose true language both models know, with
macro-F1 over those shared languages (a prediction outside them counts as wrong). The gate
result says which labels each side lacks and how many test files were compared. When the two
share fewer than two languages there is no common task: the challenger is refused, and the
reason says to retrain on the champion's languages or to register without a champion.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from aicrush.config import EvaluateConfig
from components.baseline import BaselineResult, fit_and_score_baseline

TEXT_COLUMN = "text"
LABEL_COLUMN = "language"
MODEL_CARD_FILE = "model_card.html"
PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class EvaluationResult:
    """Test-split metrics of a model, the champion comparison and the gate decision."""

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: tuple[list[str], list[list[int]]]
    passed: bool
    reason: str
    champion_metrics: dict[str, float] | None = None
    #: One row per test file: file_id (if present), label (true), prediction, score.
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    model_meta: dict[str, Any] = field(default_factory=dict)
    data_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The linear baseline fitted on the train split and scored on the same test split.
    baseline: BaselineResult | None = None
    #: How a champion with another label set was compared (see ``compare_label_sets``).
    label_comparison: dict[str, Any] | None = None


def compute_metrics(
    y_true: Sequence[str], y_pred: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]], tuple[list[str], list[list[int]]]]:
    """(metrics, per_class, (labels, confusion)) of predicted against true label names.

    Macro averages run over the true (test) labels only: a class the model predicts but the
    test split lacks has no recall to measure. The confusion matrix is square over the union of
    true and predicted labels (rows: true, columns: predicted).
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    if len(y_true) == 0:
        raise ValueError("the test split has no rows; nothing to evaluate")
    true = [str(x) for x in y_true]
    pred = [str(x) for x in y_pred]
    test_labels = sorted(set(true))
    all_labels = sorted(set(true) | set(pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=test_labels, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(
            f1_score(true, pred, labels=test_labels, average="macro", zero_division=0)
        ),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "n_test": float(len(true)),
    }
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(test_labels, precision, recall, f1, support, strict=True)
    }
    matrix = confusion_matrix(true, pred, labels=all_labels)
    return metrics, per_class, (all_labels, matrix.astype(int).tolist())


def check_floors(
    macro_f1: float, cfg: EvaluateConfig, baseline_macro_f1: float | None = None
) -> tuple[bool, str]:
    """Rules 1 and 2 of the gate on the whole test split: the absolute floor and the baseline.

    ``baseline_macro_f1`` None (not measured) or ``cfg.baseline_gate`` false skips rule 2.
    """
    if macro_f1 < cfg.min_macro_f1:
        return (
            False,
            f"macro-F1 {macro_f1:.4f} is below evaluate.min_macro_f1 {cfg.min_macro_f1:.4f}",
        )
    said = f"macro-F1 {macro_f1:.4f} meets evaluate.min_macro_f1 {cfg.min_macro_f1:.4f}"
    if baseline_macro_f1 is None or not cfg.baseline_gate:
        return True, said
    floor = baseline_macro_f1 + cfg.baseline_margin
    if macro_f1 < floor:
        return False, (
            f"macro-F1 {macro_f1:.4f} is below the linear baseline's {baseline_macro_f1:.4f} "
            f"{cfg.baseline_margin:+.4f} (evaluate.baseline_margin) = {floor:.4f} "
            "on the same split"
        )
    return True, (
        f"{said} and the linear baseline's {baseline_macro_f1:.4f} "
        f"{cfg.baseline_margin:+.4f} (evaluate.baseline_margin) = {floor:.4f}"
    )


def beats_champion(macro_f1: float, champion_macro_f1: float, margin: float) -> tuple[bool, str]:
    """Rule 3 of the gate: the challenger's macro-F1 must exceed the champion's + ``margin``."""
    needed = champion_macro_f1 + margin
    if macro_f1 > needed:
        return True, (
            f"macro-F1 {macro_f1:.4f} beats the champion's {champion_macro_f1:.4f} "
            f"+ margin {margin:.4f} = {needed:.4f}"
        )
    return False, (
        f"macro-F1 {macro_f1:.4f} does not exceed the champion's {champion_macro_f1:.4f} "
        f"+ evaluate.promotion_margin {margin:.4f} = {needed:.4f}"
    )


def gate(
    macro_f1: float,
    champion_macro_f1: float | None,
    cfg: EvaluateConfig,
    baseline_macro_f1: float | None = None,
) -> tuple[bool, str]:
    """Whether the challenger may be registered (and later promoted), with the reason in words.

    ``macro_f1``: the challenger's on the test split; ``champion_macro_f1``: the champion's on
    the same files (None: no champion); ``baseline_macro_f1``: the linear baseline's on the same
    split (None: not measured, rule 2 is skipped). The reason carries no "not promoted" prefix:
    callers state the outcome themselves.
    """
    passed, reason = check_floors(macro_f1, cfg, baseline_macro_f1)
    if not passed:
        return passed, reason
    if champion_macro_f1 is None:
        return True, f"no champion; {reason}"
    return beats_champion(macro_f1, champion_macro_f1, cfg.promotion_margin)


def compare_label_sets(
    challenger_labels: Sequence[str],
    champion_labels: Sequence[str],
    y_true: Sequence[str],
    challenger_pred: Sequence[str],
    champion_pred: Sequence[str],
) -> dict[str, Any] | None:
    """Compare two models with different label sets on their shared task, or None if they agree.

    The shared task is the test rows whose true label both models know; macro-F1 runs over the
    shared labels present in those rows. Returns a dict with ``rule`` (``shared_labels``, or
    ``refused`` when fewer than two labels are shared), ``shared``, ``only_challenger``,
    ``only_champion``, ``n_test_compared`` and both models' ``*_macro_f1`` on it (None when
    refused).
    """
    mine, theirs = set(challenger_labels), set(champion_labels)
    if mine == theirs:
        return None
    shared = sorted(mine & theirs)
    rows = [i for i, label in enumerate(y_true) if label in mine & theirs]
    outcome: dict[str, Any] = {
        "rule": "shared_labels",
        "shared": shared,
        "only_challenger": sorted(mine - theirs),
        "only_champion": sorted(theirs - mine),
        "n_test_compared": len(rows),
        "challenger_macro_f1": None,
        "champion_macro_f1": None,
    }
    if len({y_true[i] for i in rows}) < 2:
        outcome["rule"] = "refused"
        return outcome
    true = [y_true[i] for i in rows]
    outcome["challenger_macro_f1"] = compute_metrics(true, [challenger_pred[i] for i in rows])[0][
        "macro_f1"
    ]
    outcome["champion_macro_f1"] = compute_metrics(true, [champion_pred[i] for i in rows])[0][
        "macro_f1"
    ]
    return outcome


def describe_label_comparison(comparison: dict[str, Any]) -> str:
    """The label-set outcome in words, for the gate reason."""
    lacks = []
    if comparison["only_challenger"]:
        lacks.append(f"the champion lacks {', '.join(comparison['only_challenger'])}")
    if comparison["only_champion"]:
        lacks.append(f"the challenger lacks {', '.join(comparison['only_champion'])}")
    head = "label sets differ (" + "; ".join(lacks) + ")"
    if comparison["rule"] == "refused":
        return (
            f"{head}: they share {len(comparison['shared'])} language(s) with test files, too few "
            "for a common task, so the challenger is refused; retrain on the champion's languages, "
            "or register without comparing (clear the champion alias)"
        )
    return (
        f"{head}: compared on the {len(comparison['shared'])} shared languages "
        f"({comparison['n_test_compared']} test files)"
    )


def load_test_split(features_dir: Path) -> pd.DataFrame:
    path = Path(features_dir) / "test.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"test.parquet is missing from {features_dir}; point features_dir at the output of engineer_features"
        )
    frame = pd.read_parquet(path)
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)}; engineer_features writes them"
        )
    if frame.empty:
        raise ValueError(f"{path} has no rows; nothing to evaluate")
    return frame.reset_index(drop=True)


def _predict(model_dir: Path, texts: list[str]) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    from aicrush.model_folder import TextClassifier

    clf = TextClassifier.from_dir(model_dir)
    probs = clf.predict_proba(texts)
    best = probs.argmax(axis=1)
    return [clf.labels[int(i)] for i in best], probs[np.arange(len(best)), best], dict(clf.meta)


def _split_counts(features_dir: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        path = Path(features_dir) / f"{split}.parquet"
        if path.is_file():
            languages = pd.read_parquet(path, columns=[LABEL_COLUMN])[LABEL_COLUMN].astype(str)
            counts[split] = {
                str(k): int(v) for k, v in languages.value_counts().sort_index().items()
            }
    return counts


def load_train_split(features_dir: Path) -> pd.DataFrame:
    """The ``train`` split the model was trained on (text and language columns)."""
    path = Path(features_dir) / "train.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"train.parquet is missing from {features_dir}; the baseline is fitted on it: point "
            "features_dir at the output of engineer_features"
        )
    return pd.read_parquet(path, columns=[TEXT_COLUMN, LABEL_COLUMN])


def evaluate(
    model_dir: Path, features_dir: Path, cfg: EvaluateConfig, champion_dir: Path | None = None
) -> EvaluationResult:
    """Score ``model_dir`` (and ``champion_dir``, if given) on ``features_dir/test.parquet``.

    Also fits the linear baseline on ``features_dir/train.parquet`` and scores it on the same
    test split. Returns the metrics, per-class table, confusion matrix, test predictions (with
    the baseline's), the baseline and the gate decision (module docstring). Labels of the test
    split unknown to the model count as wrong (a warning is in ``reason``).
    """
    test = load_test_split(features_dir)
    texts = test[TEXT_COLUMN].astype(str).tolist()
    y_true = test[LABEL_COLUMN].astype(str).tolist()
    y_pred, scores, meta = _predict(Path(model_dir), texts)
    metrics, per_class, confusion = compute_metrics(y_true, y_pred)
    baseline = fit_and_score_baseline(load_train_split(features_dir), test)

    champion_metrics = None
    comparison = None
    if champion_dir is not None:
        champ_pred, _, champ_meta = _predict(Path(champion_dir), texts)
        champion_metrics, _, _ = compute_metrics(y_true, champ_pred)
        comparison = compare_label_sets(
            meta.get("labels", []), champ_meta.get("labels", []), y_true, y_pred, champ_pred
        )
    baseline_f1 = baseline.metrics["macro_f1"]
    if champion_metrics is None:
        passed, reason = gate(metrics["macro_f1"], None, cfg, baseline_f1)
    else:
        passed, reason = check_floors(metrics["macro_f1"], cfg, baseline_f1)
        if passed and comparison is None:
            passed, reason = beats_champion(
                metrics["macro_f1"], champion_metrics["macro_f1"], cfg.promotion_margin
            )
        elif passed and comparison is not None and comparison["rule"] == "refused":
            passed, reason = False, describe_label_comparison(comparison)
        elif passed and comparison is not None:
            passed, reason = beats_champion(
                comparison["challenger_macro_f1"],
                comparison["champion_macro_f1"],
                cfg.promotion_margin,
            )
            reason = f"{reason}; {describe_label_comparison(comparison)}"
    unknown = sorted(set(y_true) - set(meta.get("labels", [])))
    if unknown:
        reason += f" (test languages unknown to the model, scored as wrong: {', '.join(unknown)})"

    predictions = pd.DataFrame(
        {
            "label": y_true,
            "prediction": y_pred,
            "score": scores.astype(np.float32),
            "baseline_prediction": baseline.predictions,
        }
    )
    for column in ("path", "repository", "file_id"):
        if column in test.columns:
            predictions.insert(0, column, test[column].to_numpy())
    return EvaluationResult(
        metrics=metrics,
        per_class=per_class,
        confusion=confusion,
        passed=passed,
        reason=reason,
        champion_metrics=champion_metrics,
        predictions=predictions,
        model_meta=meta,
        data_counts=_split_counts(features_dir),
        baseline=baseline,
        label_comparison=comparison,
    )


# ---------------------------------------------------------------------------------------------
# Model card

MODEL_CARD_TEMPLATE = "model_card.html.j2"


def render_model_card(result: EvaluationResult) -> str:
    """A self-contained HTML model card (inline CSS) for the Kubeflow dashboard and MLflow.

    Rendered from the Jinja2 template ``components/templates/model_card.html.j2`` (package
    data) with autoescaping: the model's metrics beside the linear baseline's and the
    champion's, per-class results of both, the confusion matrix, data counts, settings.
    """
    import jinja2

    from components.baseline import DESCRIPTION

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("components", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    meta = result.model_meta
    baseline = result.baseline
    champion = result.champion_metrics or {}
    metric_header = ["metric", "model"]
    if baseline is not None:
        metric_header += ["baseline", "model - baseline"]
    if result.champion_metrics is not None:
        metric_header.append("champion")
    metric_rows = []
    for key, value in result.metrics.items():
        row: list[Any] = [key, value]
        if baseline is not None:
            b = baseline.metrics.get(key, float("nan"))
            row += [b, float("nan") if key == "n_test" else value - b]
        if result.champion_metrics is not None:
            row.append(champion.get(key, float("nan")))
        metric_rows.append(row)
    per_class_header = ["language", "precision", "recall", "F1", "support"]
    if baseline is not None:
        per_class_header.append("baseline F1")
    per_class_rows = []
    for lab, m in result.per_class.items():
        row = [lab, m["precision"], m["recall"], m["f1"], m["support"]]
        if baseline is not None:
            row.append(baseline.per_class.get(lab, {}).get("f1", float("nan")))
        per_class_rows.append(row)
    splits = list(result.data_counts)
    languages = sorted({lab for c in result.data_counts.values() for lab in c})
    count_rows = [[lab, *(result.data_counts[s].get(lab, 0) for s in splits)] for lab in languages]
    count_rows.append(["total", *(sum(result.data_counts[s].values()) for s in splits)])
    settings = meta.get("train_config", {})
    setting_rows = [[k, v] for k, v in sorted(settings.items())]
    setting_rows += [
        [k, meta[k]]
        for k in (
            "preset",
            "base_model",
            "seed",
            "n_train",
            "steps",
            "train_seconds",
            "samples_per_second",
            "device",
        )
        if k in meta
    ]
    labels, matrix = result.confusion
    return env.get_template(MODEL_CARD_TEMPLATE).render(
        verdict="pass" if result.passed else "fail",
        reason=result.reason,
        labels=meta.get("labels", []),
        baseline=baseline,
        baseline_description=DESCRIPTION,
        metric_header=metric_header,
        metric_rows=metric_rows,
        label_comparison=result.label_comparison,
        per_class_header=per_class_header,
        per_class_rows=per_class_rows,
        confusion_labels=labels,
        confusion_rows=list(zip(labels, matrix, strict=True)),
        confusion_peak=max((max(r) for r in matrix if r), default=1) or 1,
        splits=splits,
        count_rows=count_rows,
        setting_rows=setting_rows,
    )


def write_outputs(result: EvaluationResult, out_dir: Path) -> Path:
    """Write ``model_card.html``, ``predictions.parquet`` and ``evaluation.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_CARD_FILE).write_text(render_model_card(result))
    result.predictions.to_parquet(out_dir / PREDICTIONS_FILE, index=False)
    summary = {
        "metrics": result.metrics,
        "per_class": result.per_class,
        "confusion": {"labels": result.confusion[0], "matrix": result.confusion[1]},
        "passed": result.passed,
        "reason": result.reason,
        "champion_metrics": result.champion_metrics,
        "baseline": result.baseline.summary() if result.baseline else None,
        "label_comparison": result.label_comparison,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(summary, indent=2))
    return out_dir


# ---------------------------------------------------------------------------------------------
# KFP glue


class GateOutputs(NamedTuple):
    passed: bool
    reason: str
    macro_f1: float


def resolve_champion(champion_uri: str) -> Path | None:
    """'' -> None; a local folder or an MLflow URI (models:/name@champion, runs:/...) -> model folder."""
    if not champion_uri:
        return None
    from aicrush.model_folder import resolve_model_dir

    if Path(champion_uri).is_dir():
        return resolve_model_dir(champion_uri)
    import mlflow.artifacts

    from aicrush.errors import google_credentials

    # Artifacts in gs:// need Google credentials; evaluate runs before register, so this is
    # where a run without them stops: one CredentialsError line, not google.auth's traceback.
    with google_credentials(f"the champion {champion_uri}"):
        local = mlflow.artifacts.download_artifacts(artifact_uri=champion_uri)
    return resolve_model_dir(local)


def run_evaluate_step(
    config: dict[str, Any],
    model: Any,
    features: Any,
    champion_uri: str,
    metrics: Any,
    confusion: Any,
    model_card: Any,
    predictions: Any,
) -> GateOutputs:
    """The body of the ``evaluate_model`` component: evaluate, log artifacts, return the gate.

    The model card is written to ``model_card.path``; the test predictions, as Parquet, to
    ``predictions.path``: an output of its own, since in the cluster only an output's own path
    is uploaded to the artifact store (a file beside it dies with the pod).
    """
    from aicrush.config import config_from_dict

    cfg = config_from_dict(config)
    result = evaluate(
        Path(model.path), Path(features.path), cfg.evaluate, resolve_champion(champion_uri)
    )
    from aicrush.progress import report

    report(
        f"evaluate: test accuracy {result.metrics['accuracy']:.3f}, macro-F1 "
        f"{result.metrics['macro_f1']:.3f}; {'passed' if result.passed else 'not promoted'}: "
        f"{result.reason}"
    )
    for key, value in result.metrics.items():
        metrics.log_metric(key, float(value))
    for key, value in (result.champion_metrics or {}).items():
        metrics.log_metric(f"champion_{key}", float(value))
    if result.baseline is not None:
        for key in ("accuracy", "macro_f1"):
            metrics.log_metric(f"baseline_{key}", float(result.baseline.metrics[key]))
        metrics.log_metric("baseline_fit_seconds", float(result.baseline.fit_seconds))
    metrics.log_metric("passed", float(result.passed))
    confusion.log_confusion_matrix(result.confusion[0], result.confusion[1])
    card = Path(model_card.path)
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(render_model_card(result))
    table = Path(predictions.path)
    table.parent.mkdir(parents=True, exist_ok=True)
    result.predictions.to_parquet(table, index=False)
    predictions.metadata.update({"format": "parquet", "rows": len(result.predictions)})
    return GateOutputs(result.passed, result.reason, float(result.metrics["macro_f1"]))


from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output  # noqa: E402

from components import pipeline_component  # noqa: E402


@pipeline_component
def evaluate_model(
    config: dict,
    model: Input[Model],
    features: Input[Dataset],
    champion_uri: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    model_card: Output[HTML],
    predictions: Output[Dataset],
) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs", [("passed", bool), ("reason", str), ("macro_f1", float)]
):
    """Evaluate the trained model on the test split and decide whether it may be registered.

    config: the whole aicrush config; its ``evaluate`` section sets min_macro_f1, baseline_margin
    and promotion_margin. model: the train_model folder. features: the engineer_features folder
    (test.parquet is scored; train.parquet fits the baseline).
    champion_uri: "" for none, else a local model folder or an MLflow URI (models:/name@champion).
    metrics: accuracy, macro-F1, macro precision/recall (the champion's prefixed champion_; the linear
    baseline's, fitted on the train split, prefixed baseline_: accuracy, macro_f1, fit_seconds).
    confusion: the test confusion matrix. model_card: the HTML model card.
    predictions: the test split's predictions, a Parquet file (repository, path, label,
    prediction, score, baseline_prediction).
    Returns passed (the gate), reason (in words) and the challenger's macro_f1.
    """
    from components.evaluate_model import run_evaluate_step

    return run_evaluate_step(
        config, model, features, champion_uri, metrics, confusion, model_card, predictions
    )
