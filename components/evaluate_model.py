"""The ``evaluate_model`` step: score a trained model on the test split and decide the gate.

Metrics (accuracy, macro-F1, per-class precision/recall/F1, confusion matrix) are computed over
the languages of the test split with scikit-learn. The gate is data, not an exception: the
challenger passes when its macro-F1 is at least ``evaluate.min_macro_f1`` and, when a champion
is given, above the champion's macro-F1 on the same test split plus
``evaluate.promotion_margin``. Labels are matched by name, so a champion trained on other
languages is still comparable (a test language it does not know counts as wrong for it).
"""

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from aicrush.config import EvaluateConfig

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


def gate(macro_f1: float, champion_macro_f1: float | None, cfg: EvaluateConfig) -> tuple[bool, str]:
    """Whether the challenger may be registered (and later promoted), with the reason in words."""
    if macro_f1 < cfg.min_macro_f1:
        return (
            False,
            f"macro-F1 {macro_f1:.4f} is below evaluate.min_macro_f1 {cfg.min_macro_f1:.4f}",
        )
    if champion_macro_f1 is None:
        return (
            True,
            f"no champion; macro-F1 {macro_f1:.4f} meets evaluate.min_macro_f1 {cfg.min_macro_f1:.4f}",
        )
    needed = champion_macro_f1 + cfg.promotion_margin
    if macro_f1 > needed:
        return True, (
            f"macro-F1 {macro_f1:.4f} beats the champion's {champion_macro_f1:.4f} "
            f"+ margin {cfg.promotion_margin:.4f} = {needed:.4f}"
        )
    return False, (
        f"macro-F1 {macro_f1:.4f} does not exceed the champion's {champion_macro_f1:.4f} "
        f"+ evaluate.promotion_margin {cfg.promotion_margin:.4f} = {needed:.4f}"
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


def evaluate(
    model_dir: Path, features_dir: Path, cfg: EvaluateConfig, champion_dir: Path | None = None
) -> EvaluationResult:
    """Score ``model_dir`` (and ``champion_dir``, if given) on ``features_dir/test.parquet``.

    Returns the metrics, per-class table, confusion matrix, test predictions and the gate
    decision. Labels of the test split unknown to the model count as wrong (a warning is in
    ``reason``).
    """
    test = load_test_split(features_dir)
    texts = test[TEXT_COLUMN].astype(str).tolist()
    y_true = test[LABEL_COLUMN].astype(str).tolist()
    y_pred, scores, meta = _predict(Path(model_dir), texts)
    metrics, per_class, confusion = compute_metrics(y_true, y_pred)

    champion_metrics = None
    if champion_dir is not None:
        champ_pred, _, _ = _predict(Path(champion_dir), texts)
        champion_metrics, _, _ = compute_metrics(y_true, champ_pred)
    passed, reason = gate(
        metrics["macro_f1"], champion_metrics["macro_f1"] if champion_metrics else None, cfg
    )
    unknown = sorted(set(y_true) - set(meta.get("labels", [])))
    if unknown:
        reason += f" (test languages unknown to the model, scored as wrong: {', '.join(unknown)})"

    predictions = pd.DataFrame(
        {"label": y_true, "prediction": y_pred, "score": scores.astype(np.float32)}
    )
    if "file_id" in test.columns:
        predictions.insert(0, "file_id", test["file_id"].to_numpy())
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
    )


# ---------------------------------------------------------------------------------------------
# Model card

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.pass{color:#0a7a2f;font-weight:bold}.fail{color:#b00020;font-weight:bold}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _confusion_html(labels: list[str], matrix: list[list[int]]) -> str:
    peak = max((max(r) for r in matrix if r), default=1) or 1
    head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labels)
    rows = []
    for lab, row in zip(labels, matrix, strict=True):
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{0.85 * v / peak:.2f})">{v}</td>' for v in row
        )
        rows.append(f"<tr><th>{html.escape(lab)}</th>{cells}</tr>")
    return f"<table><tr><th>true \\ predicted</th>{head}</tr>{''.join(rows)}</table>"


def render_model_card(result: EvaluationResult) -> str:
    """A self-contained HTML model card (inline CSS) for the Kubeflow dashboard and MLflow."""
    meta = result.model_meta
    verdict = "pass" if result.passed else "fail"
    labels = meta.get("labels", [])
    metric_rows = [
        (k, v, (result.champion_metrics or {}).get(k, float("nan")))
        for k, v in result.metrics.items()
    ]
    per_class_rows = [
        (lab, m["precision"], m["recall"], m["f1"], m["support"])
        for lab, m in result.per_class.items()
    ]
    splits = list(result.data_counts)
    languages = sorted({lab for c in result.data_counts.values() for lab in c})
    count_rows = [(lab, *(result.data_counts[s].get(lab, 0) for s in splits)) for lab in languages]
    count_rows.append(("total", *(sum(result.data_counts[s].values()) for s in splits)))
    settings = meta.get("train_config", {})
    setting_rows = [(k, v) for k, v in sorted(settings.items())]
    setting_rows += [
        (k, meta[k])
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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>aicrush model card</title><style>{_CSS}</style></head>
<body>
<h1>aicrush model card: code language classifier</h1>
<p>Gate: <span class="{verdict}">{verdict.upper()}</span> &mdash; {html.escape(result.reason)}</p>
<p>Labels ({len(labels)}): {html.escape(", ".join(labels))}</p>
<h2>Test metrics</h2>
{_table(["metric", "model", "champion"], metric_rows)}
<h2>Per class (test split)</h2>
{_table(["language", "precision", "recall", "F1", "support"], per_class_rows)}
<h2>Confusion matrix (test split)</h2>
{_confusion_html(*result.confusion)}
<h2>Data (files per split)</h2>
{_table(["language", *splits], count_rows)}
<h2>Training settings</h2>
{_table(["setting", "value"], setting_rows)}
</body></html>
"""


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

    return resolve_model_dir(mlflow.artifacts.download_artifacts(artifact_uri=champion_uri))


def run_evaluate_step(
    config: dict[str, Any],
    model: Any,
    features: Any,
    champion_uri: str,
    metrics: Any,
    confusion: Any,
    model_card: Any,
) -> GateOutputs:
    """The body of the ``evaluate_model`` component: evaluate, log artifacts, return the gate.

    The model card is written to ``model_card.path``; the test predictions to
    ``predictions.parquet`` beside it (its path is in ``model_card.metadata["predictions"]``).
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
    metrics.log_metric("passed", float(result.passed))
    confusion.log_confusion_matrix(result.confusion[0], result.confusion[1])
    card = Path(model_card.path)
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(render_model_card(result))
    predictions_path = card.parent / PREDICTIONS_FILE
    result.predictions.to_parquet(predictions_path, index=False)
    model_card.metadata["predictions"] = str(predictions_path)
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
) -> NamedTuple(  # type: ignore[valid-type]
    "Outputs", [("passed", bool), ("reason", str), ("macro_f1", float)]
):
    """Evaluate the trained model on the test split and decide whether it may be registered.

    config: the whole aicrush config; its ``evaluate`` section sets min_macro_f1 and promotion_margin.
    model: the train_model folder. features: the engineer_features folder (test.parquet is used).
    champion_uri: "" for none, else a local model folder or an MLflow URI (models:/name@champion).
    metrics: accuracy, macro-F1, macro precision/recall (and the champion's, prefixed champion_).
    confusion: the test confusion matrix. model_card: the HTML model card.
    Returns passed (the gate), reason (in words) and the challenger's macro_f1.
    """
    from components.evaluate_model import run_evaluate_step

    return run_evaluate_step(config, model, features, champion_uri, metrics, confusion, model_card)
