"""register_model: record a trained model in MLflow as a new version with alias ``challenger``.

One MLflow run holds the parameters, the evaluation metrics, the training curve (the model
folder's ``training_history.json``, written by ``train_model``: ``train_loss``, ``learning_rate``,
``grad_norm`` per logging step and ``val_accuracy`` per epoch, each at its optimizer step), the
dataset lineage (content hash and sources of the ingest manifest), the model card and the drift
reference sample; the model folder is logged with its ONNX exports (``model.onnx``,
``model.int8.onnx``, see :func:`export_for_serving`) and the serving backend it was registered
with, as a pyfunc ("models from code", see ``serving/mlflow_pyfunc.py``) with a signature and an
input example, and registered under ``registry.model_name``.

Registration is all or nothing and idempotent per pipeline run: a version is tagged with the
run key, a retried step finds it and registers no second one (a step whose lookup fails stops
there rather than guess). A failure or interruption (Ctrl-C included) between creating the
version and moving the alias deletes the version this call created, and only that one (its
MLflow run is this call's own), so ``aicrush serve`` never meets a version without its alias and
tags. Nothing else is deleted: not another attempt's version of the same run key, not a version
that is complete with its alias (ending the MLflow run comes after, outside the cleanup), and never
the registered model (deleting an "empty" one could take a concurrent registration's new version
with it; ``aicrush serve`` explains a registered model without versions). The MLflow run stays,
ended FAILED, as the record of the attempt. Should the cleanup fail as well (the registry went
away), the version keeps its tag ``aicrush.registration=incomplete``: it is never chosen as the
latest version, and a retried step deletes it once its MLflow run has ended (one still RUNNING may
be another attempt mid-way: it is left alone) and registers again.
"""

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from kfp.dsl import HTML, Dataset, Input, Metrics, Model

from aicrush.config import AicrushConfig, ServingConfig, config_from_dict
from aicrush.errors import google_credentials
from aicrush.model_folder import MODEL_META_FILE
from aicrush.registry import (
    CHALLENGER,
    INCOMPLETE,
    REFERENCE_ARTIFACT,
    REGISTRATION_TAG,
    client,
    is_incomplete,
    tracking,
)
from aicrush.state import artifact_root, resolve_tracking_uri
from components import pipeline_component

log = logging.getLogger(__name__)

RUN_KEY_TAG = "aicrush.run_key"
PYFUNC_CODE = Path(__file__).resolve().parents[1] / "serving" / "mlflow_pyfunc.py"


@dataclass(frozen=True)
class RegistrationResult:
    model_name: str
    version: str
    run_id: str
    created: bool  # False when a retried step found the version of its run
    aliases: list[str] = field(default_factory=list)
    tracking_uri: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def build_reference_sample(
    model_dir: Path, features_dir: Path, rows: int, seed: int = 0
) -> pd.DataFrame:
    """Features and predictions of up to ``rows`` held-out files: the drift monitor's reference.

    Both held-out splits (validation and test) are drawn from: neither was trained on, so the
    model's predictions on them are what production traffic like the training data gets, and a
    repository-disjoint split can leave the validation split alone too small for a drift verdict
    (it needs ``serving.monitor.drift.MIN_ROWS`` rows).
    """
    from aicrush.model_folder import TextClassifier
    from features.file_features import FEATURE_NAMES

    held_out = [features_dir / f"{split}.parquet" for split in ("val", "test")]
    val = pd.concat([pd.read_parquet(p) for p in held_out if p.is_file()], ignore_index=True)
    if len(val) > rows:
        val = val.sample(n=rows, random_state=seed).sort_index()
    classifier = TextClassifier.from_dir(model_dir)
    preds = classifier.predict(val["text"].tolist())
    ref = val[list(FEATURE_NAMES)].reset_index(drop=True).copy()
    ref["label"] = val["language"].to_numpy()
    ref["prediction"] = [p.label for p in preds]
    ref["score"] = [p.score for p in preds]
    return ref


def held_out_texts(features_dir: Path, rows: int, seed: int = 0) -> list[str]:
    """The texts of the held-out sample :func:`build_reference_sample` draws (same rows, order)."""
    held_out = [features_dir / f"{split}.parquet" for split in ("val", "test")]
    val = pd.concat([pd.read_parquet(p) for p in held_out if p.is_file()], ignore_index=True)
    if len(val) > rows:
        val = val.sample(n=rows, random_state=seed).sort_index()
    return [str(t) for t in val["text"]]


@dataclass(frozen=True)
class ServingExport:
    """What :func:`export_for_serving` wrote: the backend recorded and each ONNX backend's label
    agreement with the fp32 torch model on the held-out texts (share of texts, 0-1)."""

    backend: str
    agreement: dict[str, float]
    reason: str = ""


def export_for_serving(
    model_dir: Path,
    out_dir: Path,
    texts: list[str],
    torch_labels: list[str],
    serving: ServingConfig,
    say: Callable[[str], None] = log.info,
) -> ServingExport:
    """Copy ``model_dir`` to ``out_dir`` with its ONNX exports and the backend to serve it with.

    The ONNX files (fp32 and int8, ``serving.onnx_backend.export_onnx``) are written next to the
    safetensors weights; each ONNX backend's labels on ``texts`` are compared with
    ``torch_labels`` (the fp32 eager model's). ``serving.backend`` is recorded in aicrush.json
    (``serving_backend``) when it is torch or its agreement is at least ``serving.min_agreement``;
    else torch is, and ``reason`` says why. An export that fails also falls back to torch.
    """
    from serving.onnx_backend import BACKEND_META_KEY, ONNX_META_KEY, OnnxBackend, export_onnx

    shutil.copytree(model_dir, out_dir)
    meta_path = out_dir / MODEL_META_FILE
    agreement: dict[str, float] = {}
    backend, reason = serving.backend, ""
    try:
        files = export_onnx(out_dir)
        for name in files:
            onnx = OnnxBackend(out_dir, name, threads=1)
            probs, _ = onnx.forward(texts)
            labels = [onnx.labels[int(i)] for i in probs.argmax(axis=1)]
            same = sum(a == b for a, b in zip(labels, torch_labels, strict=True))
            agreement[name] = same / max(1, len(texts))
    except Exception as err:  # an architecture the exporter cannot trace: serve with torch
        log.exception("ONNX export failed")
        backend, reason = "torch", f"ONNX export failed ({type(err).__name__}: {err})"
    if backend != "torch" and agreement.get(backend, 0.0) < serving.min_agreement:
        reason = (
            f"{backend} gives the fp32 model's label on {agreement.get(backend, 0.0):.4f} of "
            f"{len(texts)} held-out texts, under serving.min_agreement {serving.min_agreement}"
        )
        backend = "torch"
    meta = json.loads(meta_path.read_text())
    meta[BACKEND_META_KEY] = backend
    if agreement:
        meta.setdefault(ONNX_META_KEY, {})["label_agreement"] = agreement
    meta_path.write_text(json.dumps(meta, indent=2))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in agreement.items())
    say(
        f"serving backend: {backend}"
        + (f" (label agreement with fp32 torch: {shown})" if shown else "")
        + (f"; not {serving.backend}: {reason}" if reason else "")
    )
    return ServingExport(backend, agreement, reason)


def _versions_of_run(c: Any, model_name: str, run_key: str) -> list[Any]:
    """The versions tagged with ``run_key``. A lookup that fails raises: read as "none", it would
    register a second version of the run (a model that does not exist yet gives [])."""
    from mlflow.exceptions import MlflowException

    try:
        return list(
            c.search_model_versions(f"name = '{model_name}' and tag.`{RUN_KEY_TAG}` = '{run_key}'")
        )
    except MlflowException as err:
        raise RuntimeError(
            f"could not look up the versions run {run_key} registered in {model_name} ({err}); "
            "nothing was registered: retry the step once the MLflow registry answers"
        ) from err


#: MLflow run statuses of an attempt that will write nothing more.
ENDED_RUN_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


def _find_version_of_run(c: Any, model_name: str, run_key: str) -> Any | None:
    """The complete version a previous attempt of this run registered (the newest, should two
    attempts have overlapped). An incomplete one whose MLflow run has ended (its cleanup failed) is
    deleted, so the retry registers again; one whose run is still RUNNING may be another attempt
    mid-way and is left alone (its tag keeps it from being served)."""
    found = None
    for mv in _versions_of_run(c, model_name, run_key):
        if not is_incomplete(mv):
            if found is None or int(mv.version) > int(found.version):
                found = mv
            continue
        status = c.get_run(mv.run_id).info.status if mv.run_id else "unknown"
        if status in ENDED_RUN_STATUSES:
            c.delete_model_version(model_name, mv.version)
        else:
            log.warning(
                "version %s of %s is incomplete and its MLflow run %s is %s (another attempt may "
                "still be writing it): left as it is",
                mv.version, model_name, mv.run_id, status,
            )  # fmt: skip
    return found


def _ensure_registered_model(c: Any, name: str) -> None:
    """Create the registered model unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name, description="aicrush programming-language classifier")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _delete_own_version(c: Any, name: str, run_id: str, created: Any | None) -> None:
    """Delete the version this call created in MLflow run ``run_id``: ``created``, the
    ModelVersion create_model_version returned, or with none returned (interrupted mid-request)
    the one the registry holds for ``run_id``. A version of any other run is never touched, and
    neither is the registered model. A failure here is logged, not raised: the caller re-raises
    the first error, and the version keeps its ``incomplete`` tag."""
    try:
        if created is not None:
            mine = [created]
        else:
            mine = list(c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
        for mv in mine:
            if mv.run_id == run_id:
                c.delete_model_version(name, mv.version)
    except Exception:
        log.exception("could not delete the partial registration of %s (run %s)", name, run_id)


def _ensure_experiment(c: Any, name: str, tracking_uri: str, state: Path) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = artifact_root(state) if tracking_uri.startswith("sqlite:") else None
    return str(c.create_experiment(name, artifact_location=location))


#: Training figures the model folder's aicrush.json holds, logged on the MLflow run beside the
#: evaluation metrics (the mlm_* ones only when train.mlm_epochs pretrained the encoder).
TRAINING_METRICS = (
    "train_seconds", "samples_per_second", "val_accuracy",
    "mlm_loss", "mlm_steps", "mlm_chunks", "mlm_seconds",
)  # fmt: skip


def training_metrics(model_dir: Path) -> dict[str, float]:
    """The TRAINING_METRICS present in ``model_dir``'s aicrush.json (numbers only)."""
    meta = json.loads((Path(model_dir) / MODEL_META_FILE).read_text())
    return {
        k: float(meta[k])
        for k in TRAINING_METRICS
        if isinstance(meta.get(k), int | float) and not isinstance(meta.get(k), bool)
    }


def log_training_curve(c: Any, run_id: str, model_dir: Path) -> int:
    """Log the model folder's training curve into run ``run_id``, one metric point per step
    (MLflow draws them as charts over ``step``); returns the number of points logged (0 for a
    model folder without a curve, e.g. one trained before the curve was recorded)."""
    import time

    from mlflow.entities import Metric

    from aicrush.model_folder import TRAINING_HISTORY_FILE

    path = Path(model_dir) / TRAINING_HISTORY_FILE
    if not path.is_file():
        return 0
    now = int(time.time() * 1000)
    points = [
        Metric(key, float(value), now, int(point["step"]))
        for point in json.loads(path.read_text())
        for key, value in point.items()
        if key not in ("step", "epoch")
    ]
    for start in range(0, len(points), 1000):  # MLflow's limit per log_batch call
        c.log_batch(run_id, metrics=points[start : start + 1000])
    return len(points)


def _flat_params(cfg: AicrushConfig) -> dict[str, str]:
    data = cfg.to_dict()
    params: dict[str, str] = {"preset": cfg.preset}
    for section in ("ingest", "validate", "train", "evaluate"):
        for key, value in data[section].items():
            params[f"{section}.{key}"] = (
                json.dumps(value) if isinstance(value, list | dict) else str(value)
            )
    return {k: v[:500] for k, v in params.items()}


def register(
    model_dir: Path,
    features_dir: Path,
    cfg: AicrushConfig,
    *,
    run_key: str,
    metrics: Mapping[str, float],
    manifest: Mapping[str, Any],
    state: Path,
    model_card: Path | None = None,
    tracking_uri: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RegistrationResult:
    """Log and register ``model_dir``; returns the (new or already registered) version."""
    tracking_uri = tracking_uri or resolve_tracking_uri(cfg.registry, state)
    # MLflow resolves logged models through its global tracking store, even from a client.
    with tracking(tracking_uri):
        return _register(
            model_dir,
            features_dir,
            cfg,
            run_key,
            metrics,
            manifest,
            state,
            model_card,
            tracking_uri,
            progress or log.info,
        )


def _register(
    model_dir: Path,
    features_dir: Path,
    cfg: AicrushConfig,
    run_key: str,
    metrics: Mapping[str, float],
    manifest: Mapping[str, Any],
    state: Path,
    model_card: Path | None,
    tracking_uri: str,
    say: Callable[[str], None],
) -> RegistrationResult:
    import mlflow
    from mlflow.models import infer_signature

    reg = cfg.registry
    c = client(tracking_uri)
    name = reg.model_name

    existing = _find_version_of_run(c, name, run_key) if run_key else None
    if existing is not None:
        say(
            f"version {existing.version} of {name} was already registered by run {run_key}; not adding another"
        )
        c.set_registered_model_alias(name, CHALLENGER, existing.version)
        return RegistrationResult(
            name, str(existing.version), existing.run_id or "", False, [CHALLENGER], tracking_uri
        )

    experiment_id = _ensure_experiment(c, reg.experiment, tracking_uri, state)
    reference = build_reference_sample(
        model_dir, features_dir, reg.reference_rows, seed=cfg.validate_.seed
    )
    test = pd.read_parquet(features_dir / "test.parquet", columns=["text"])
    example = pd.DataFrame({"text": test["text"].head(2).str.slice(0, 300).tolist()})
    signature = infer_signature(
        example, pd.DataFrame({"label": ["Python"] * len(example), "score": [0.5] * len(example)})
    )

    with (
        mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train-{run_key or 'adhoc'}"
        ) as run,
        google_credentials(run.info.artifact_uri),
    ):
        mlflow.log_params(_flat_params(cfg))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_metrics(training_metrics(model_dir))
        log_training_curve(c, run.info.run_id, model_dir)
        mlflow.set_tags(
            {
                "dataset_content_hash": str(manifest.get("content_hash", "")),
                "sources": json.dumps(list(manifest.get("sources", [])))[:5000],
                RUN_KEY_TAG: run_key,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            ref_path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
            (Path(tmp) / "manifest.json").write_text(
                json.dumps(dict(manifest), indent=2, default=str)
            )
            mlflow.log_artifact(str(Path(tmp) / "manifest.json"), artifact_path="dataset")
        if model_card is not None and model_card.is_file():
            # MLflow serves an artifact's content type by its extension: .html renders in the UI.
            with tempfile.TemporaryDirectory() as tmp:
                card_html = Path(tmp) / "model_card.html"
                shutil.copyfile(model_card, card_html)
                mlflow.log_artifact(str(card_html), artifact_path="model_card")
        from serving import mlflow_pyfunc_env as pyfunc_env

        with tempfile.TemporaryDirectory() as tmp:
            # A copy: the step's input artifact stays as train_model wrote it.
            say("exporting ONNX files for serving")
            export = export_for_serving(
                model_dir,
                Path(tmp) / "model",
                held_out_texts(features_dir, reg.reference_rows, seed=cfg.validate_.seed),
                reference["prediction"].tolist(),
                cfg.serving,
                say,
            )
            say("logging the model to MLflow")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"model": str(Path(tmp) / "model")},
                signature=signature,
                input_example=example,
                # Requirements an index serves; the aicrush kernel travels as code (not on PyPI).
                pip_requirements=pyfunc_env.pip_requirements(),
                code_paths=pyfunc_env.code_paths(),
            )
        # The registered model is created only now, so an interruption during the minutes of
        # export and upload above leaves nothing in the registry; inside the run, so that the
        # run of a registration that fails ends FAILED.
        _ensure_registered_model(c, name)
        created: Any = None  # the ModelVersion this call created: the only one a failure deletes
        try:
            created = c.create_model_version(
                name,
                source=info.model_uri,
                run_id=run.info.run_id,
                tags={RUN_KEY_TAG: run_key, REGISTRATION_TAG: INCOMPLETE},
                model_id=info.model_id,
            )
            version = str(created.version)
            c.set_model_version_tag(
                name, version, "dataset_content_hash", str(manifest.get("content_hash", ""))
            )
            for key, value in metrics.items():
                c.set_model_version_tag(name, version, f"metric.{key}", f"{float(value):.6f}")
            c.set_model_version_tag(name, version, "serving_backend", export.backend)
            for key, value in export.agreement.items():
                c.set_model_version_tag(name, version, f"label_agreement.{key}", f"{value:.6f}")
            c.set_model_version_tag(name, version, REGISTRATION_TAG, "complete")
            c.set_registered_model_alias(name, CHALLENGER, version)
        except BaseException:
            # All or nothing, Ctrl-C included: no version without its alias and tags; the step
            # fails with the first error. The cleanup ends here, inside the run: a failure while
            # the run ends (below) leaves the complete, aliased version as it is.
            _delete_own_version(c, name, run.info.run_id, created)
            raise
    say(f"registered {name} version {version} with alias '{CHALLENGER}'")
    return RegistrationResult(name, version, run.info.run_id, True, [CHALLENGER], tracking_uri)


class RegisterOutputs(NamedTuple):
    model_name: str
    model_version: str
    model_uri: str


def run_register_step(
    config: dict[str, Any],
    state_dir: str,
    run_key: str,
    gate_passed: bool,
    gate_reason: str,
    model: Any,
    features: Any,
    raw: Any,
    evaluation: Any,
    model_card: Any,
) -> RegisterOutputs:
    """Protocol glue of the ``register_model`` component."""
    from aicrush.progress import report as show_progress
    from aicrush.state import state_dir as resolve_state

    cfg = config_from_dict(config)
    if not gate_passed:
        print(f"not promoted: {gate_reason}; nothing registered")
        return RegisterOutputs(cfg.registry.model_name, "", "")
    manifest = json.loads((Path(raw.path) / "manifest.json").read_text())
    metrics = {
        k: float(v) for k, v in (evaluation.metadata or {}).items() if isinstance(v, int | float)
    }
    result = register(
        Path(model.path),
        Path(features.path),
        cfg,
        run_key=run_key,
        metrics=metrics,
        manifest=manifest,
        state=resolve_state(state_dir or None),
        model_card=Path(model_card.path) if model_card is not None else None,
        progress=show_progress,
    )
    print(json.dumps(asdict(result)))
    return RegisterOutputs(result.model_name, result.version, result.model_uri)


@pipeline_component
def register_model(
    config: dict,
    state_dir: str,
    run_key: str,
    gate_passed: bool,
    gate_reason: str,
    model: Input[Model],
    features: Input[Dataset],
    raw: Input[Dataset],
    evaluation: Input[Metrics],
    model_card: Input[HTML],
) -> NamedTuple(  # type: ignore[valid-type]
    "RegisterOutputs", [("model_name", str), ("model_version", str), ("model_uri", str)]
):
    """Register the trained model in MLflow as a new version with alias ``challenger``.

    Args:
        config: the validated aicrush config (JSON dict).
        state_dir: local state folder (embedded MLflow store); unused when registry.tracking_uri is set.
        run_key: the pipeline run's id; a retried step with the same key registers nothing new.
        gate_passed: evaluate_model's verdict; when False nothing is registered ("not promoted").
        gate_reason: why the gate passed or failed (printed).
        model: the trained model folder (train_model).
        features: the feature splits (engineer_features); the held-out val and test splits give the drift reference.
        raw: the ingested dataset; its manifest gives the lineage (content hash, sources).
        evaluation: test metrics from evaluate_model, logged on the run and the version.
        model_card: the HTML model card, logged on the run.
    Returns:
        model_name, model_version and model_uri (``models:/name/version``); the version and
        URI are "" when the gate did not pass.
    """
    from components.register_model import run_register_step

    return run_register_step(
        config,
        state_dir,
        run_key,
        gate_passed,
        gate_reason,
        model,
        features,
        raw,
        evaluation,
        model_card,
    )


@pipeline_component
def lookup_champion(config: dict, state_dir: str) -> str:
    """The model URI of the version with alias ``champion`` (``models:/name@champion``), or "" if none."""
    from components.register_model import champion_uri

    return champion_uri(config, state_dir)


def champion_uri(config: dict[str, Any], state_dir: str) -> str:
    from aicrush.registry import get_version, model_uri
    from aicrush.state import state_dir as resolve_state

    cfg = config_from_dict(config)
    tracking_uri = resolve_tracking_uri(cfg.registry, resolve_state(state_dir or None))
    mv = get_version(tracking_uri, cfg.registry.model_name, alias="champion")
    return model_uri(cfg.registry.model_name, version=mv.version) if mv is not None else ""
