"""``aicrush drift`` (offline drift report on a file of requests) and ``aicrush monitor`` (the
service). Plain typer command functions; ``pipelines/cli.py`` registers them on the ``aicrush`` app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from serving.monitor.drift import (
    PREDICTION_COLUMN,
    DriftSettings,
    analyze_window,
    build_report,
    save_report,
)

DEFAULT_MODEL = "aicrush-code-language"


def read_requests(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts (and logged predictions, when every line has them) from ``path``.

    JSONL lines may be V1 requests ``{"instances": [{"text": ...}]}`` (optionally with the
    response's ``"predictions"`` beside them, as a payload log pairs them), single instances
    ``{"text": ...}`` (optionally with ``"prediction"``), or JSON strings. Any other file is read
    as plain text, one input per line.
    """
    texts: list[str] = []
    predictions: list[str] = []
    complete = True
    lines = path.read_text(encoding="utf-8").splitlines()
    as_json = path.suffix in (".jsonl", ".json", ".ndjson")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not as_json:
            texts.append(line)
            complete = False
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{path}:{number} is not JSON ({exc}); use .txt for plain text, one input per line"
            ) from exc
        if isinstance(item, str):
            texts.append(item)
            complete = False
        elif isinstance(item, dict) and "instances" in item:
            batch = [i["text"] if isinstance(i, dict) else str(i) for i in item["instances"]]
            texts.extend(batch)
            preds = item.get("predictions")
            if preds is not None and len(preds) == len(batch):
                predictions.extend(p["label"] if isinstance(p, dict) else str(p) for p in preds)
            else:
                complete = False
        elif isinstance(item, dict) and "text" in item:
            texts.append(item["text"])
            if "prediction" in item:
                predictions.append(str(item["prediction"]))
            else:
                complete = False
        else:
            raise typer.BadParameter(
                f"{path}:{number}: expected {{'instances': [...]}}, "
                "{'text': ...} or a JSON string"
            )
    if not texts:
        raise typer.BadParameter(f"{path} holds no requests")
    return texts, (predictions if complete else None)


def drift_command(
    requests: Annotated[
        Path,
        typer.Argument(
            help="JSONL of V1 requests/instances, or plain text lines (one input per line)",
            exists=True,
            dir_okay=False,
        ),
    ],
    reference: Annotated[
        str,
        typer.Option(
            help="Parquet reference file, 'mlflow' (the "
            "version's reference/reference.parquet) or "
            "models:/NAME/VERSION"
        ),
    ] = "mlflow",
    model: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_MODEL,
    version: Annotated[str, typer.Option(help="model version or alias")] = "champion",
    out: Annotated[
        Path,
        typer.Option(
            help="HTML report path (a .json summary is written beside it); gs:// not supported here"
        ),
    ] = Path("drift-report.html"),
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="model folder to predict labels with when the requests carry no predictions"
        ),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="exit 1 when the dataset drifted")] = False,
) -> None:
    """Run the monitor's drift analysis offline: REQUESTS against the model version's reference.

    Compares the request features (and the predicted labels, when the file carries them or
    --model-dir gives a model) with the reference, writes the Evidently HTML report and a JSON
    summary, and prints the verdict.
    """
    from serving.monitor.features import features_of
    from serving.monitor.reference import load_reference

    ref = load_reference(reference, model, version, tracking_uri=tracking_uri)
    texts, predictions = read_requests(requests)
    if predictions is None and model_dir is not None:
        from aicrush.model_folder import TextClassifier

        predictions = [p.label for p in TextClassifier.from_dir(model_dir).predict(texts)]
    settings = DriftSettings()
    frame = features_of(texts)
    if predictions is None:
        typer.echo("no predictions in the requests and no --model-dir: comparing features only")
        settings = DriftSettings(
            columns=tuple(c for c in settings.columns if c != PREDICTION_COLUMN)
        )
    else:
        frame[PREDICTION_COLUMN] = predictions
    result = analyze_window(frame, ref.frame, settings)
    where = save_report(build_report(frame, ref.frame, settings), str(out))
    summary = {
        **result.to_dict(),
        "reference_sha256": ref.sha256,
        "reference": ref.source,
        "report": where,
    }
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    typer.echo(
        f"{verdict}: {result.n_drifted}/{len(result.columns)} columns drifted "
        f"(share {result.share_drifted:.2f}, threshold {settings.drift_share}); "
        f"{result.n_rows} requests vs {result.n_reference_rows} reference rows "
        f"(sha256 {ref.sha256[:12]}); report {where}"
    )
    if fail_on_drift and result.dataset_drift:
        raise typer.Exit(1)


def monitor_command(
    reference: Annotated[
        str, typer.Option(help="Parquet reference, 'mlflow' or models:/NAME/VERSION")
    ] = "mlflow",
    model: Annotated[
        str, typer.Option(help="model name (the InferenceService name in KServe logger events)")
    ] = DEFAULT_MODEL,
    version: Annotated[str, typer.Option(help="model version or alias")] = "champion",
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port")] = 8085,
    state_dir: Annotated[
        Path, typer.Option(help="folder of monitor.db (reference, open windows, verdicts)")
    ] = Path(".aicrush/monitor"),
    window_rows: Annotated[int, typer.Option(help="close a window after this many inputs")] = 1000,
    window_seconds: Annotated[
        float | None, typer.Option(help="...or this long after its first input")
    ] = None,
    reports: Annotated[
        str | None, typer.Option(help="folder or gs:// prefix for HTML reports")
    ] = None,
    report_on: Annotated[str, typer.Option(help="never | drift | always")] = "drift",
    retrain: Annotated[
        str, typer.Option(help="none | embedded (aicrush run) | cluster (KFP)")
    ] = "none",
    kfp_host: Annotated[str | None, typer.Option(help="KFP endpoint for --retrain cluster")] = None,
    pipeline_package: Annotated[
        str | None, typer.Option(help="compiled pipeline YAML for --retrain cluster")
    ] = None,
    sustained_windows: Annotated[
        int, typer.Option(help="drifted windows in a row that start a retrain")
    ] = 3,
    retrain_interval_s: Annotated[
        float, typer.Option(help="at most one retrain per this many seconds")
    ] = 21600.0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Serve the drift monitor: CloudEvents in on POST /, /metrics, /healthz, /reports."""
    import uvicorn

    from serving.monitor.app import create_app

    monitor = build_monitor(
        reference=reference,
        model=model,
        version=version,
        state_dir=state_dir,
        window_rows=window_rows,
        window_seconds=window_seconds,
        reports=reports,
        report_on=report_on,
        retrain=retrain,
        kfp_host=kfp_host,
        pipeline_package=pipeline_package,
        sustained_windows=sustained_windows,
        retrain_interval_s=retrain_interval_s,
        tracking_uri=tracking_uri,
    )
    try:
        uvicorn.run(create_app(monitor), host=host, port=port, log_level="info")
    finally:
        monitor.close()


def build_monitor(
    *,
    reference: str,
    model: str,
    version: str,
    state_dir: Path,
    window_rows: int = 1000,
    window_seconds: float | None = None,
    reports: str | None = None,
    report_on: str = "drift",
    retrain: str = "none",
    kfp_host: str | None = None,
    pipeline_package: str | None = None,
    sustained_windows: int = 3,
    retrain_interval_s: float = 21600.0,
    tracking_uri: str | None = None,
    background: bool = True,
):  # -> Monitor (import kept lazy)
    """Validate the options and build the :class:`~serving.monitor.service.Monitor`."""
    from serving.monitor.reference import load_reference
    from serving.monitor.retrain import (
        RetrainPolicy,
        RetrainTrigger,
        cluster_hook,
        embedded_hook,
    )
    from serving.monitor.service import Monitor, MonitorConfig
    from serving.monitor.windows import WindowPolicy

    if report_on not in ("never", "drift", "always"):
        raise typer.BadParameter(f"--report-on {report_on!r}: use never, drift or always")
    if retrain not in ("none", "embedded", "cluster"):
        raise typer.BadParameter(f"--retrain {retrain!r}: use none, embedded or cluster")
    if retrain == "cluster" and not (kfp_host and pipeline_package):
        raise typer.BadParameter("--retrain cluster needs --kfp-host and --pipeline-package")
    ref = load_reference(reference, model, version, tracking_uri=tracking_uri)
    config = MonitorConfig(
        state_dir=state_dir,
        policy=WindowPolicy(max_rows=window_rows, max_age_s=window_seconds),
        reports=reports,
        report_on=report_on,  # type: ignore[arg-type]
        background=background,
    )
    hook = None
    if retrain == "embedded":
        hook = embedded_hook()
    elif retrain == "cluster":
        hook = cluster_hook(kfp_host or "", pipeline_package or "")
    trigger = RetrainTrigger(hook, RetrainPolicy(sustained_windows, retrain_interval_s))
    loader = None
    if reference == "mlflow":  # every version events arrive for (a canary too) gets its reference

        def loader(model_name: str, model_version: str):
            return load_reference("mlflow", model_name, model_version, tracking_uri=tracking_uri)

    return Monitor(config, references=[ref], retrain=trigger, reference_loader=loader)
