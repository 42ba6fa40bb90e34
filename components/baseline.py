"""The linear baseline every run measures the model against.

A TF-IDF of character 1-3-grams (``char_wb``: n-grams inside word boundaries, sublinear term
frequency) over the first ``BASELINE_CHARS`` characters of each file, and a linear SVM with
balanced class weights (scikit-learn). It fits in seconds on the training split of the default
corpus and is a strong yardstick for language identification: a transformer that does not beat
it, on the same split in the same run, is not worth serving. ``evaluate_model`` fits it on
exactly the ``train`` split the model was trained on and scores it on the same ``test`` split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Characters of each file the baseline reads (its head); more adds little and costs fit time.
BASELINE_CHARS = 4000
TEXT_COLUMN = "text"
LABEL_COLUMN = "language"
DESCRIPTION = (
    "TF-IDF char_wb 1-3-grams (sublinear tf) of the first 4,000 characters + "
    "LinearSVC(class_weight='balanced'), scikit-learn, fitted on the train split"
)


@dataclass
class BaselineResult:
    """The baseline's test metrics and what it was fitted on.

    ``metrics``: ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall``, ``n_test``
    (as ``evaluate_model.compute_metrics``); ``per_class``: per test language precision, recall,
    F1, support; ``train_counts``: files per language it was fitted on; ``fit_seconds``: wall
    time of fitting and scoring; ``predictions``: one predicted label per test row, in order.
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    train_counts: dict[str, int]
    fit_seconds: float
    predictions: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return sum(self.train_counts.values())

    def summary(self) -> dict[str, Any]:
        """JSON-ready: accuracy, macro_f1, per-language F1, n_train, fit_seconds, description."""
        return {
            "accuracy": self.metrics["accuracy"],
            "macro_f1": self.metrics["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in self.per_class.items()},
            "n_train": self.n_train,
            "fit_seconds": round(self.fit_seconds, 3),
            "description": DESCRIPTION,
        }


def build_baseline() -> Any:
    """The unfitted scikit-learn pipeline (TfidfVectorizer -> LinearSVC)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)),
            ("svm", LinearSVC(class_weight="balanced")),
        ]
    )


def _heads(texts: Sequence[str], chars: int = BASELINE_CHARS) -> list[str]:
    return [str(t)[:chars] for t in texts]


def fit_and_score_baseline(
    train: pd.DataFrame, test: pd.DataFrame, chars: int = BASELINE_CHARS
) -> BaselineResult:
    """Fit the baseline on ``train`` (columns ``text``, ``language``) and score it on ``test``,
    each file read up to its first ``chars`` characters (``BASELINE_CHARS`` in every run; other
    budgets for ``benchmarks/bench_quality.py --baseline-chars``).

    Raises ``ValueError`` when ``train`` has fewer than two languages (nothing to separate).
    """
    from components.evaluate_model import compute_metrics

    labels = train[LABEL_COLUMN].astype(str)
    if labels.nunique() < 2:
        raise ValueError(
            f"the train split has {labels.nunique()} language(s); the baseline needs at least 2"
        )
    started = time.perf_counter()
    pipeline = build_baseline().fit(_heads(train[TEXT_COLUMN].astype(str).tolist(), chars), labels)
    predicted = [
        str(x) for x in pipeline.predict(_heads(test[TEXT_COLUMN].astype(str).tolist(), chars))
    ]
    seconds = time.perf_counter() - started
    metrics, per_class, _ = compute_metrics(test[LABEL_COLUMN].astype(str).tolist(), predicted)
    counts = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    return BaselineResult(metrics, per_class, counts, seconds, predicted)
