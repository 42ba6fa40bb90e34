"""The run summary's corpus statistics and per-language support, from validated splits."""

from __future__ import annotations

import json

import pandas as pd

from pipelines.local import RunSummary, corpus_statistics


def frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["repository", "language"])


def test_corpus_statistics_count_repositories_per_language_over_all_splits() -> None:
    splits = {
        "train": frame([("a", "Python"), ("a", "Python"), ("b", "Python"), ("a", "C")]),
        "val": frame([("c", "Python"), ("d", "Rust")]),
        "test": frame([("e", "C"), ("f", "Rust"), ("g", "Rust")]),
    }
    corpus, support = corpus_statistics(splits, {"download_bytes": 1234})
    assert corpus == {
        "repositories": 7,
        "languages": 3,
        "min_repositories_per_language": 2,  # C: a, e
        "median_repositories_per_language": 3.0,  # C 2, Python 3, Rust 3
        "download_bytes": 1234,
    }
    assert support == {
        "C": {"train": 1, "val": 0, "test": 1},
        "Python": {"train": 3, "val": 1, "test": 0},
        "Rust": {"train": 0, "val": 1, "test": 2},
    }
    summary = RunSummary(
        model_name="m",
        model_version="1",
        aliases=["challenger"],
        promoted=True,
        reason="ok",
        metrics={},
        languages=["C", "Python", "Rust"],
        n_files={"train": 4, "val": 2, "test": 3},
        mlflow_tracking_uri="sqlite:///x",
        reports={},
        run_dir="/r",
        wall_seconds=1.0,
        corpus=corpus,
        support=support,
    )
    assert json.loads(summary.to_json())["corpus"]["min_repositories_per_language"] == 2
    assert "corpus:         7 repositories, 3 languages, 2-3 (min-median)" in summary.human()
    assert "training:" not in summary.human()  # no train step metrics, no line
    assert "dropped:" not in summary.human()
    summary.dropped_languages = {"Julia": 1, "JavaScript": 5}
    assert (
        "dropped:        Julia (1 file), JavaScript (5 files): fewer than "
        "validate.min_files_per_class" in summary.human()
    )
    assert json.loads(summary.to_json())["dropped_languages"] == {"Julia": 1, "JavaScript": 5}
    summary.training = {"steps": 12.0, "train_seconds": 3.5, "val_accuracy": 0.5,
                        "mlm_steps": 4.0, "mlm_chunks": 40.0, "mlm_seconds": 1.25, "mlm_loss": 6.5}  # fmt: skip
    assert (
        "training:       12 steps in 3.5 s, val accuracy 0.5000; masked-LM pretraining 4 steps "
        "on 40 chunks in 1.2 s, loss 6.500" in summary.human()
    )


def test_a_manifest_without_packages_downloads_nothing() -> None:
    corpus, _ = corpus_statistics({"train": frame([("a", "C")])}, {})
    assert corpus["download_bytes"] == 0
