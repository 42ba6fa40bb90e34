"""Run the training pipeline on this machine through ``kfp.local`` and summarize the result.

The same pipeline function that compiles for Kubeflow runs here, each step in a subprocess of
this Python environment (``SubprocessRunner(use_venv=False)``); artifacts land under
``<state>/pipeline_root/<run>/<task>/<output>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aicrush.config import AicrushConfig
from pipelines.training import PIPELINE_NAME, build_training_pipeline


@dataclass
class RunSummary:
    """What a run produced: the outcome, the data, the metrics and where the reports are."""

    model_name: str
    model_version: str
    aliases: list[str]
    promoted: bool
    reason: str
    metrics: dict[str, float]
    languages: list[str]
    n_files: dict[str, int]
    mlflow_tracking_uri: str
    reports: dict[str, str]
    run_dir: str
    wall_seconds: float
    dataset_content_hash: str = ""
    per_class: dict[str, Any] = field(default_factory=dict)
    #: repositories, languages, min/median_repositories_per_language (after validation) and
    #: download_bytes (what a fresh cache downloads for the pypi: sources; 0 for other kinds).
    corpus: dict[str, Any] = field(default_factory=dict)
    #: Files per language per split: {language: {"train": n, "val": n, "test": n}}.
    support: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The linear baseline on the same split: accuracy, macro_f1, per_class_f1 (test split).
    baseline: dict[str, Any] = field(default_factory=dict)
    #: A few held-out test files: path, label (true), prediction, score.
    predictions: list[dict[str, Any]] = field(default_factory=list)
    #: Languages validation dropped for having fewer files than validate.min_files_per_class:
    #: {language: files}.
    dropped_languages: dict[str, int] = field(default_factory=dict)
    #: The train step's metrics: train_loss, val_accuracy, steps, train_seconds,
    #: samples_per_second, n_train, and mlm_loss / mlm_steps / mlm_chunks / mlm_seconds when
    #: train.mlm_epochs pretrained the encoder.
    training: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def human(self) -> str:
        lines = [
            "",
            "aicrush run summary",
            "-------------------",
            f"outcome:        {'registered' if self.model_version else 'not registered'} ({self.reason})",
        ]
        if not self.model_version and self.reports.get("model"):
            lines.append(
                f"                the trained model is still served with: "
                f"aicrush serve --path {self.reports['model']}"
            )
        if self.model_version:
            lines.append(
                f"model:          {self.model_name} version {self.model_version} "
                f"(aliases: {', '.join(self.aliases) or '-'})"
            )
        lines += [
            "test metrics:   " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(self.metrics.items())),
            f"languages ({len(self.languages)}): {', '.join(self.languages)}",
        ]
        if self.dropped_languages:
            lines.append(
                "dropped:        "
                + ", ".join(
                    f"{k} ({v} file{'' if v == 1 else 's'})"
                    for k, v in self.dropped_languages.items()
                )
                + ": fewer than validate.min_files_per_class; lower it or add files to keep them"
            )
        lines += [
            "files:          " + ", ".join(f"{k}={v}" for k, v in self.n_files.items()),
        ]
        if self.training:
            t = self.training
            line = (
                f"training:       {t.get('steps', 0):.0f} steps in {t.get('train_seconds', 0):.1f} s, "
                f"val accuracy {t.get('val_accuracy', float('nan')):.4f}"
            )
            if "mlm_steps" in t:
                line += (
                    f"; masked-LM pretraining {t['mlm_steps']:.0f} steps on "
                    f"{t.get('mlm_chunks', 0):.0f} chunks in {t.get('mlm_seconds', 0):.1f} s, "
                    f"loss {t.get('mlm_loss', float('nan')):.3f}"
                )
            lines.append(line)
        if self.corpus:
            c = self.corpus
            lines.append(
                f"corpus:         {c['repositories']} repositories, {c['languages']} languages, "
                f"{c['min_repositories_per_language']}-{c['median_repositories_per_language']:g} "
                f"(min-median) repositories per language, download {c['download_bytes'] / 1e6:.1f} MB"
            )
        lines += [
            f"MLflow:         {self.mlflow_tracking_uri}",
        ]
        if self.per_class:
            ranked = sorted(self.per_class.items(), key=lambda kv: (-kv[1]["support"], kv[0]))
            lines.append(
                "test F1 (n):    "
                + ", ".join(f"{k} {v['f1']:.2f} ({v['support']})" for k, v in ranked)
            )
        if self.baseline:
            lines.append(
                f"baseline:       accuracy={self.baseline['accuracy']:.4f}, "
                f"macro_f1={self.baseline['macro_f1']:.4f} (char n-grams + linear SVM, same split; "
                f"model - baseline macro_f1 = "
                f"{self.metrics.get('macro_f1', float('nan')) - self.baseline['macro_f1']:+.4f})"
            )
        lines += [f"report:         {name}: {path}" for name, path in sorted(self.reports.items())]
        lines.append(f"wall time:      {self.wall_seconds:.1f} s")
        if self.predictions:
            lines.append("held-out test files (true -> predicted, score):")
            lines += [
                f"  {p['path']}: {p['label']} -> {p['prediction']} ({p['score']:.2f})"
                for p in self.predictions
            ]
        return "\n".join(lines)


def _newest_run_dir(pipeline_root: Path, since: float) -> Path:
    runs = [
        p
        for p in pipeline_root.glob(f"{PIPELINE_NAME}-*")
        if p.is_dir() and p.stat().st_mtime >= since - 1
    ]
    if not runs:
        raise RuntimeError(f"kfp.local wrote no run folder under {pipeline_root}")
    return max(runs, key=lambda p: p.stat().st_mtime)


def _executor_metadata(task_dir: Path, output: str) -> dict[str, Any]:
    """Metadata kfp.local recorded for an output artifact of a task (e.g. logged metrics)."""
    path = task_dir / "executor_output.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    for artifact in data.get("artifacts", {}).get(output, {}).get("artifacts", []):
        return dict(artifact.get("metadata", {}))
    return {}


def summarize(run_dir: Path, outcome: dict[str, Any], tracking_uri: str, wall: float) -> RunSummary:
    manifest = json.loads((run_dir / "ingest-sources" / "dataset" / "manifest.json").read_text())
    clean = run_dir / "validate-dataset" / "clean"
    import pandas as pd

    splits = {
        split: pd.read_parquet(clean / f"{split}.parquet", columns=["repository", "language"])
        for split in ("train", "val", "test")
    }
    n_files = {split: int(frame.shape[0]) for split, frame in splits.items()}
    corpus, support = corpus_statistics(splits, manifest)
    languages = sorted(
        pd.read_parquet(clean / "train.parquet", columns=["language"])["language"].unique()
    )
    logged = {
        k: float(v)
        for k, v in _executor_metadata(run_dir / "evaluate-model", "metrics").items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics = {k: v for k, v in logged.items() if not k.startswith("baseline_")}
    predictions_path = run_dir / "evaluate-model" / "predictions"  # the output, as Parquet
    reports = {
        "data_report": _as_html(run_dir / "validate-dataset" / "report"),
        "model_card": _as_html(run_dir / "evaluate-model" / "model_card"),
        "model": str(run_dir / "train-model" / "model"),
    }
    version = str(outcome.get("model_version") or "")
    return RunSummary(
        model_name=str(outcome.get("model_name", "")),
        model_version=version,
        aliases=["challenger"] if version else [],
        promoted=bool(outcome.get("passed")),
        reason=str(outcome.get("reason", "")),
        metrics=metrics,
        languages=[str(x) for x in languages],
        n_files=n_files,
        mlflow_tracking_uri=tracking_uri,
        reports=reports,
        run_dir=str(run_dir),
        wall_seconds=round(wall, 2),
        dataset_content_hash=str(manifest.get("content_hash", "")),
        per_class=_per_class(predictions_path),
        corpus=corpus,
        support=support,
        baseline=_baseline(predictions_path, logged),
        predictions=_examples(predictions_path),
        dropped_languages=_small_classes(clean / "report.json"),
        training={
            k: float(v)
            for k, v in _executor_metadata(run_dir / "train-model", "metrics").items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
    )


def _small_classes(report: Path) -> dict[str, int]:
    """The languages validation dropped as too small, from its report.json ({} if none)."""
    try:
        small = json.loads(report.read_text()).get("small_classes", {})
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in small.items()}


def corpus_statistics(
    splits: dict[str, Any], manifest: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """(corpus, support) of the validated splits (``{split: DataFrame with repository and
    language}``) and the ingest manifest: see :class:`RunSummary`."""
    import statistics

    import pandas as pd

    frames = [f.assign(split=name) for name, f in splits.items()]
    both = pd.concat(frames, ignore_index=True)
    per_language = both.groupby("language")["repository"].nunique()
    counts = both.groupby(["language", "split"]).size()
    support = {
        str(language): {name: int(counts.get((language, name), 0)) for name in splits}
        for language in sorted(per_language.index)
    }
    corpus = {
        "repositories": int(both["repository"].nunique()),
        "languages": len(per_language),
        "min_repositories_per_language": int(per_language.min()) if len(per_language) else 0,
        "median_repositories_per_language": (
            float(statistics.median(per_language.tolist())) if len(per_language) else 0.0
        ),
        "download_bytes": int(manifest.get("download_bytes", 0)),
    }
    return corpus, support


def _as_html(artifact: Path) -> str:
    """A browser-openable copy of a KFP ``HTML`` artifact: kfp.local names the file after the
    output (no extension), so browsers would show its source. Returns the ``.html`` path."""
    html = artifact.with_name(artifact.name + ".html")
    if artifact.is_file():
        shutil.copyfile(artifact, html)
    return str(html)


def _per_class(predictions: Path) -> dict[str, Any]:
    """Per-language precision, recall, F1 and support on the test split (from evaluate_model's
    predictions), or {} when the step wrote none."""
    if not predictions.is_file():
        return {}
    import pandas as pd

    from components.evaluate_model import compute_metrics

    frame = pd.read_parquet(predictions, columns=["label", "prediction"])
    if frame.empty:
        return {}
    return compute_metrics(frame["label"].tolist(), frame["prediction"].tolist())[1]


def _baseline(predictions: Path, logged: dict[str, float]) -> dict[str, Any]:
    """The linear baseline's test accuracy, macro-F1 and per-language F1 (evaluate_model logs
    the first two and writes its predictions beside the model's), or {} when it was not run."""
    if "baseline_macro_f1" not in logged:
        return {}
    out: dict[str, Any] = {
        "accuracy": logged["baseline_accuracy"],
        "macro_f1": logged["baseline_macro_f1"],
    }
    if predictions.is_file():
        import pandas as pd

        from components.evaluate_model import compute_metrics

        frame = pd.read_parquet(predictions)
        if "baseline_prediction" in frame.columns and not frame.empty:
            per_class = compute_metrics(
                frame["label"].tolist(), frame["baseline_prediction"].tolist()
            )[1]
            out["per_class_f1"] = {k: round(v["f1"], 4) for k, v in per_class.items()}
    return out


def _examples(predictions: Path, n: int = 8) -> list[dict[str, Any]]:
    """Up to ``n`` held-out test files, one per language (most frequent languages first; the
    first file of each in test order): path, true label, predicted label, score."""
    if not predictions.is_file():
        return []
    import pandas as pd

    frame = pd.read_parquet(predictions)
    if frame.empty:
        return []
    if "path" not in frame.columns:
        frame["path"] = frame.get("file_id", pd.Series(range(len(frame)))).astype(str)
    elif "repository" in frame.columns:
        frame["path"] = frame["repository"].astype(str) + "/" + frame["path"].astype(str)
    order = frame["label"].value_counts().index[:n]
    firsts = frame.groupby("label", sort=False).head(1).set_index("label")
    return [
        {
            "path": str(firsts.at[label, "path"]),
            "label": str(label),
            "prediction": str(firsts.at[label, "prediction"]),
            "score": round(float(firsts.at[label, "score"]), 4),
        }
        for label in order
    ]


class StepFailed(RuntimeError):
    """A pipeline step failed: ``step`` (task name), ``cause`` (its one-line error) and
    ``log_file`` (the run's full log)."""

    def __init__(self, step: str, cause: str, log_file: Path):
        super().__init__(f"step {step} failed: {cause}")
        self.step, self.cause, self.log_file = step, cause, log_file


def check_sources(cfg: AicrushConfig) -> None:
    """Fail before the pipeline starts on a source that can be checked without the network.

    The source dispatcher (:func:`components.sources.kind_of`) says what each source is; local
    folders, tables and git folders must exist, ``pypi:`` sources must be exact pins or name an
    existing ``pypi:FILE`` (of exact pins) or ``pypi:FOLDER``, ``gs://`` prefixes must name a
    bucket. The objects, git URLs and the packages on the index are checked by the ingest step
    (they need the network).
    Raises :class:`aicrush.config.ConfigError` naming the source and what to give instead.
    """
    from aicrush.config import ConfigError
    from aicrush.errors import DataError
    from components.sources import kind_of
    from components.sources.gcs import parse_gs_uri
    from components.sources.pypi import PREFIX, packages_of

    for source in cfg.ingest.sources:
        text = str(source)
        try:
            kind = kind_of(text)
            if kind == "pypi":
                packages_of(text.removeprefix(PREFIX).strip())
            if kind == "gcs":
                parse_gs_uri(text)
        except DataError as err:
            if text.startswith((PREFIX, "gs://")):  # their errors say what is wrong
                said = str(err).removesuffix(" in ingest.sources")
                raise ConfigError(f"{said} (--source / ingest.sources)") from None
            path = Path(text).expanduser()
            what = "is of no known kind" if path.exists() else "does not exist"
            raise ConfigError(
                f"source {text!r} {what} (resolved to {path.resolve()}); "
                "give an existing folder, git repository, "
                ".parquet/.csv table or .parquet dataset folder, a gs://bucket/prefix, a git URL, pypi:NAME==VERSION, "
                "pypi:default, pypi:FILE, pypi:FOLDER or python-environment "
                "(--source / ingest.sources)"
            ) from None


def check_training(cfg: AicrushConfig) -> None:
    """Fail before the pipeline starts on a ``train.distributed`` this machine cannot run
    (:func:`components.train_worker.check_local_distributed`) or a ``train.base_model`` hub id
    that cannot load offline (:func:`components.model_builder.check_hub_model_loadable`),
    instead of after ingest, validation, features and the train step's retries.
    Raises :class:`aicrush.config.ConfigError` naming the setting."""
    from aicrush.config import ConfigError
    from components.model_builder import check_hub_model_loadable, hub_offline
    from components.train_worker import check_local_distributed

    try:
        check_local_distributed(cfg.train.distributed)
        # local runs set HF_HUB_OFFLINE=1 unless it is set (run_pipeline_locally)
        check_hub_model_loadable(cfg.train.base_model, offline=hub_offline(default="1"))
    except ValueError as err:  # DataError is one
        raise ConfigError(str(err)) from None


def run_pipeline_locally(
    cfg: AicrushConfig,
    state: Path,
    log_file: Path | None = None,
    verbose: bool = False,
    terminal: TextIO | None = None,
) -> RunSummary:
    """Run the whole training pipeline with kfp.local and summarize it.

    Everything the steps print goes to ``log_file`` (default ``<state>/runs/run-<time>.log``);
    ``terminal`` (default stderr) gets one line per step, the steps' progress lines and, with
    ``verbose``, every line. Raises :class:`StepFailed` (step, one-line cause, log file) when a
    step fails and :class:`aicrush.config.ConfigError` when a local source does not exist.
    """
    from kfp import local

    from aicrush.state import resolve_tracking_uri
    from pipelines.run_output import RunOutput, default_log_file

    # The steps run as subprocesses of this one: they inherit where MLflow is and stay offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_sources(cfg)
    check_training(cfg)
    tracking_uri = resolve_tracking_uri(cfg.registry, state)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # step lines reach the log as they happen
    pipeline_root = state / "pipeline_root"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # Expected here, and noise to a user: the steps run in this environment, not in the images
    # the cluster uses, and cluster resources (GPU, CPU, memory) do not apply locally.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )

    output = RunOutput(log_file or default_log_file(state), terminal or sys.stderr, verbose=verbose)
    start = time.time()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            task = build_training_pipeline(cfg, state_dir=str(state))(
                config=cfg.to_dict(), state_dir=str(state)
            )
    except RuntimeError as err:
        step = output.fail_current()
        output.close()
        if step is None:
            failed = [s for s in output.steps if s.status == "FAILED"]
            if not failed:
                raise StepFailed("(pipeline)", str(err), output.log_path) from None
            step = failed[-1]
        raise StepFailed(step.name, step.cause, output.log_path) from None
    finally:
        if not output.closed:
            output.close()
    wall = time.time() - start
    summary = summarize(
        _newest_run_dir(pipeline_root, start), dict(task.outputs), tracking_uri, wall
    )
    summary.reports["log"] = str(output.log_path)
    return summary
