"""The run summary's baseline and held-out examples, from evaluate_model's predictions file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.local import RunSummary, _baseline, _examples


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "repository": ["r1", "r1", "r2", "r2", "r3"],
            "path": ["a.py", "b.py", "c.c", "d.py", "e.md"],
            "label": ["Python", "Python", "C", "Python", "Markdown"],
            "prediction": ["Python", "C", "C", "Python", "Python"],
            "score": [0.9, 0.6, 0.8, 0.7, 0.4],
            "baseline_prediction": ["Python", "Python", "Python", "Python", "Markdown"],
        }
    )
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path)
    return path


def test_baseline_block_holds_logged_metrics_and_per_language_f1(predictions: Path) -> None:
    logged = {"baseline_accuracy": 0.8, "baseline_macro_f1": 0.6, "macro_f1": 0.5}
    baseline = _baseline(predictions, logged)
    assert baseline["accuracy"] == 0.8 and baseline["macro_f1"] == 0.6
    # Baseline per language: Python 3/3 recall, precision 3/4 -> F1 6/7; C never right -> 0.
    assert baseline["per_class_f1"] == {"C": 0.0, "Markdown": 1.0, "Python": round(6 / 7, 4)}
    assert _baseline(predictions, {"macro_f1": 0.5}) == {}  # a run without a baseline


def test_examples_are_one_per_language_most_frequent_first(predictions: Path) -> None:
    examples = _examples(predictions, n=2)
    assert examples == [
        {"path": "r1/a.py", "label": "Python", "prediction": "Python", "score": 0.9},
        {"path": "r2/c.c", "label": "C", "prediction": "C", "score": 0.8},
    ]


def test_human_summary_ends_with_the_examples(predictions: Path) -> None:
    summary = RunSummary(
        model_name="m",
        model_version="1",
        aliases=["challenger"],
        promoted=True,
        reason="no champion",
        metrics={"accuracy": 0.9, "macro_f1": 0.7},
        languages=["C", "Markdown", "Python"],
        n_files={"train": 10, "val": 2, "test": 5},
        mlflow_tracking_uri="sqlite:///x",
        reports={},
        run_dir="/tmp/x",
        wall_seconds=1.0,
        baseline={"accuracy": 0.8, "macro_f1": 0.6},
        predictions=_examples(predictions),
    )
    text = summary.human()
    assert "model - baseline macro_f1 = +0.1000" in text
    assert text.rstrip().endswith("r3/e.md: Markdown -> Python (0.40)")
