"""The ``aicrush`` command: run the pipeline locally, compile and submit it, serve, roll out, monitor."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from aicrush.config import PRESETS, ConfigError, load_config
from aicrush.state import last_summary_path, state_dir

app = typer.Typer(
    name="aicrush",
    help="End-to-end MLOps on Kubeflow Pipelines and KServe: train a source-code language "
    "classifier from your files, register it in MLflow, serve it, roll it out and watch it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal (docstrings are wrapped at 100)
)

SourceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--source",
        "-s",
        help="Where the files come from (repeatable): pypi:NAME==VERSION (or pypi:FILE of such "
        "lines, pypi:FOLDER of sdists), gs://bucket/prefix, a local folder, a git repository "
        "(path or URL), a labelled .parquet/.csv table (text, language), or python-environment "
        "(stdlib + installed distributions). Default: pypi:default, the pinned default corpus "
        "(70 PyPI sdists, downloaded once into the ingest cache).",
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help=f"Model and data size preset: {', '.join(PRESETS)}. 'tiny' (default) trains a small "
        "encoder in minutes on a CPU; 'small' pretrains (masked LM) and fine-tunes a 4-layer encoder, for a GPU; 'minilm' fine-tunes all-MiniLM-L6-v2 (offline); 'custom' "
        "applies no preset: only --config and the defaults (see README: Presets).",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (see README: Configuration). Unknown keys fail."
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Local state folder (MLflow store, Feast stores, pipeline root). Default $AICRUSH_HOME or ./.aicrush.",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"aicrush {version('aicrush')}")
        except PackageNotFoundError:
            typer.echo("aicrush (not installed as a distribution; run `make install`)")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the aicrush version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """End-to-end MLOps on Kubeflow Pipelines and KServe: train a source-code language
    classifier from your files, register it in MLflow, serve it, roll it out and watch it."""


def _warn_if_no_registry(cfg) -> None:
    """A cluster run without an MLflow server would register into a throwaway file in a pod."""
    if not cfg.registry.tracking_uri:
        typer.echo(
            "warning: registry.tracking_uri is empty, so cluster steps would use a SQLite store "
            "inside their pods; set it to your MLflow server (e.g. "
            "http://aicrush-mlflow.aicrush.svc.cluster.local:5000, see docs/deploy-gke.md)",
            err=True,
        )


def _warn_for_the_cluster(cfg, sources: bool = True, training: bool = True) -> None:
    """What a compiled pipeline would meet in the cluster's pods: sources on this machine's
    disk (``sources``), a hub model in images that run offline (both for the training pipeline
    only: the rollout pipeline reads no data and trains nothing)."""
    from aicrush.images import KUSTOMIZATION, images_from_manifests
    from components.model_builder import is_hub_id
    from pipelines.submit import cluster_source_problems

    if not images_from_manifests():
        typer.echo(
            f"warning: {KUSTOMIZATION} is missing (an install without the repository), so the "
            "pipeline names the images aicrush-<runtime>:latest, which no cluster pulls: compile "
            "from a checkout whose manifests/base/kustomization.yaml names your registry",
            err=True,
        )

    if not training:
        return
    for problem in cluster_source_problems(cfg) if sources else []:
        typer.echo(f"warning: source {problem.message}", err=True)
    if is_hub_id(cfg.train.base_model):
        typer.echo(
            f"warning: train.base_model {cfg.train.base_model!r} is a Hugging Face Hub id; the "
            "images run with HF_HUB_OFFLINE=1, so the train step cannot load it: copy the model "
            "to gs://BUCKET/models/NAME and name that folder",
            err=True,
        )


def _connection_refused(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a refused or unresolvable connection."""
    current: BaseException | None = err
    for _ in range(10):  # a chain of causes, not a cycle
        if current is None:
            return False
        if isinstance(current, ConnectionError) or type(current).__name__ in (
            "NewConnectionError",
            "MaxRetryError",
            "NameResolutionError",
        ):
            return True
        nxt = (
            current.__cause__ or current.__context__ or (current.args[0] if current.args else None)
        )
        current = nxt if isinstance(nxt, BaseException) else None
    return False


def _config(config: Path | None, preset: str | None, source: list[str] | None):
    try:
        return load_config(config, preset=preset, sources=source or None)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    source: SourceOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    summary: Annotated[
        Path | None,
        typer.Option("--summary", help="Also write the run summary as JSON to this file."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show every log line of every step (they always go to the log file).",
        ),
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file", help="Where the full log goes. Default `<state-dir>/runs/run-<time>.log`."
        ),
    ] = None,
) -> None:
    """Run the whole training pipeline on this machine (kfp.local): ingest, validate, Feast
    features, train, evaluate against the champion, register in MLflow as 'challenger'.

    Prints one line per step (status and time), the steps' progress (ingest, training epochs,
    evaluation) and a summary at the end; the full log of every step goes to a log file whose
    path is printed. A failed step prints its one-line cause and where its log is. Needs no
    cluster and no internet.
    """
    cfg = _config(config, preset, source)
    from pipelines.local import StepFailed, check_sources, check_training, run_pipeline_locally
    from pipelines.run_output import default_log_file

    try:
        check_sources(cfg)
        check_training(cfg)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    home = state_dir(state)
    log_path = (log_file or default_log_file(home)).resolve()
    typer.echo(
        f"aicrush: running the training pipeline (preset {cfg.preset}) with state in {home}",
        err=True,
    )
    typer.echo(f"full log: {log_path}", err=True)
    try:
        result = run_pipeline_locally(cfg, home, log_file=log_path, verbose=verbose)
    except StepFailed as err:
        typer.echo(f"error: step {err.step} failed: {err.cause}", err=True)
        typer.echo(f"full log: {err.log_file}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        # A new `aicrush run` starts a new pipeline run: training starts over (checkpoints
        # resume retries within one run, docs/training.md).
        typer.echo("\ninterrupted: the run stopped; nothing was registered", err=True)
        typer.echo(f"full log: {log_path}", err=True)
        raise typer.Exit(130) from None
    typer.echo(result.human())
    last = last_summary_path(home)  # what `aicrush serve` reads to explain an unregistered run
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text(result.to_json())
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(result.to_json())
        typer.echo(f"summary written to {summary}")


@app.command()
def ui(
    state: StateOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow store to show. Default $MLFLOW_TRACKING_URI, else `<state-dir>/mlflow.db`.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="MLflow UI worker processes (mlflow's default is 4; one starts fastest and "
            "is plenty for one user).",
        ),
    ] = 1,
) -> None:
    """Start the MLflow UI on the local store, until Ctrl-C or SIGTERM.

    Experiments show every run (params, metrics, the model card under Artifacts); Models shows
    the registered versions, their aliases (champion, challenger) and the rollout tags. The UI
    runs in its own process group; Ctrl-C or SIGTERM stops all of it (its server workers and job
    consumer too: SIGTERM, then SIGKILL after 10 s).
    """
    import sys

    from aicrush.state import artifact_root, resolve_tracking_uri
    from pipelines.process_group import run_in_own_group

    home = state_dir(state)
    uri = resolve_tracking_uri(None, home, tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", host, "--port", str(port), "--workers", str(workers)]
    if uri.startswith("sqlite:"):
        cmd += ["--default-artifact-root", artifact_root(home)]
        cmd += ["--artifacts-destination", artifact_root(home)]
    typer.echo(f"aicrush: MLflow UI on http://{host}:{port} for {uri} (Ctrl-C stops it)", err=True)
    raise typer.Exit(run_in_own_group(cmd))


class PipelineChoice(StrEnum):
    training = "training"
    rollout = "rollout"


PipelineOpt = Annotated[
    PipelineChoice,
    typer.Option(
        "--pipeline",
        help="training: ingest to register (the default); rollout: canary deploy, analysis, "
        "promote or roll back on a KServe InferenceService.",
    ),
]


def _refuse_source_for_the_rollout(source: list[str] | None, pipeline: PipelineChoice) -> None:
    """--source with the rollout pipeline, which reads no data, is a usage error (not ignored)."""
    if source and pipeline is PipelineChoice.rollout:
        raise typer.BadParameter(
            "--source applies to --pipeline training only: the rollout pipeline deploys a "
            "registered model version and reads no data",
            param_hint="--source",
        )


@app.command(name="compile")
def compile_(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the KFP IR YAML. Default: `aicrush-<pipeline>.yaml`.",
        ),
    ] = None,
    pipeline: PipelineOpt = PipelineChoice.training,
    source: SourceOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compile the training or the rollout pipeline to KFP IR YAML for a Kubeflow Pipelines cluster.

    The config becomes the default of the pipeline's `config` parameter; the training task
    requests the GPU, node selector and toleration of `resources` (default: one NVIDIA L4).
    With more than one GPU in `train.distributed` it requests no GPU and launches a Kubeflow
    Trainer TrainJob instead (docs/distributed-training.md).
    Upload the file in the Kubeflow dashboard or use `aicrush submit`. `--source` applies to the
    training pipeline only (the rollout pipeline deploys a registered version; it reads no data).
    """
    _refuse_source_for_the_rollout(source, pipeline)
    cfg = _config(config, preset, source)
    _warn_if_no_registry(cfg)
    from pipelines.compile import compile_pipeline

    target = output or Path(f"aicrush-{pipeline.value}.yaml")
    if target.suffix.lower() not in (".yaml", ".yml") or target.is_dir():
        raise typer.BadParameter(
            f"{target}: the KFP IR is written as one YAML file; give a path ending in .yaml",
            param_hint="--output",
        )
    _warn_for_the_cluster(cfg, training=pipeline is PipelineChoice.training)
    path = compile_pipeline(pipeline.value, target, cfg)
    typer.echo(f"wrote {path}")


@app.command()
def submit(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline."
        ),
    ],
    experiment: Annotated[
        str, typer.Option("--experiment", help="KFP experiment to run in.")
    ] = "aicrush",
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Name of the run in the dashboard.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Kubeflow profile namespace (multi-user).")
    ] = None,
    pipeline: PipelineOpt = PipelineChoice.training,
    model_version: Annotated[
        str | None,
        typer.Option(
            "--model-version",
            help="Rollout pipeline: the registered version to roll out (default: alias challenger).",
        ),
    ] = None,
    pipeline_root: Annotated[
        str | None,
        typer.Option(
            "--pipeline-root",
            help="Where the run's artifacts go, e.g. gs://BUCKET/pipeline-root. Default: the "
            "cluster's (kfp-launcher ConfigMap; MinIO in a standalone install). A TrainJob "
            "(train.distributed) and checkpoint resume on retry need gs://.",
        ),
    ] = None,
    service_account: Annotated[
        str | None,
        typer.Option(
            "--service-account",
            help="Kubernetes service account of the run's pods. Default: the profile's "
            "default-editor (multi-user) or pipeline-runner.",
        ),
    ] = None,
    source: SourceOpt = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compile a pipeline (training or rollout) and start a run on a Kubeflow Pipelines endpoint.

    Authentication: kfp.Client's own (KF_PIPELINES_SA_TOKEN_PATH, or a token from your
    kubeconfig/ID provider). Sources (`--source`, training only) must be reachable from the
    cluster (gs:// or git URLs).
    The run's artifacts must be in GCS (`--pipeline-root gs://...` or the cluster's default)
    for a distributed TrainJob and for a retried training pod to resume from its checkpoints.
    """
    if not host.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"{host!r} has no scheme: write http://{host} (a port-forward) or https://{host}",
            param_hint="--host",
        )
    _refuse_source_for_the_rollout(source, pipeline)
    if model_version is not None and pipeline is not PipelineChoice.rollout:
        raise typer.BadParameter(
            "--model-version applies to --pipeline rollout only", param_hint="--model-version"
        )
    cfg = _config(config, preset, source)
    _warn_if_no_registry(cfg)
    from components.trainjob import needs_trainjob
    from pipelines.submit import check_pipeline_root, cluster_source_problems, submit_pipeline

    if pipeline_root is not None:
        try:
            check_pipeline_root(pipeline_root, cfg, pipeline.value)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--pipeline-root") from None
    elif pipeline is PipelineChoice.training and needs_trainjob(cfg):
        typer.echo(
            "warning: train.distributed launches a TrainJob, which needs the run's artifacts in "
            "gs://; without --pipeline-root gs://BUCKET/PREFIX the cluster's default root is "
            "used, and the train step fails if that is not GCS (MinIO in a standalone install)",
            err=True,
        )
    if pipeline is PipelineChoice.training:
        problems = cluster_source_problems(cfg)
        for problem in problems:
            kind = "error" if problem.fatal else "warning"
            typer.echo(f"{kind}: source {problem.message}", err=True)
        if any(p.fatal for p in problems):
            raise typer.Exit(2)
        _warn_for_the_cluster(cfg, sources=False)
    arguments = {"model_version": model_version} if model_version else {}
    try:
        sub = submit_pipeline(
            pipeline.value,
            cfg,
            host,
            experiment=experiment,
            run_name=run_name,
            namespace=namespace,
            arguments=arguments,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    except Exception as err:  # the KFP client raises many types; the user needs the message
        if _connection_refused(err):
            reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
            typer.echo(
                f"error: cannot reach Kubeflow Pipelines at {host}"
                f" ({reason[1].strip() if reason else type(err).__name__}): check --host, and "
                "that the port-forward runs (kubectl -n kubeflow port-forward "
                "svc/ml-pipeline-ui 8080:80)",
                err=True,
            )
            raise typer.Exit(1) from None
        typer.echo(f"error: could not submit to {host}: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"submitted {sub.pipeline} run {sub.run_id} in experiment {sub.experiment}: {sub.run_url}"
    )


def _register_commands() -> None:
    """Commands whose logic lives in serving/: the model server, the rollout and the monitor."""
    from serving.cli_serve import serve_command
    from serving.monitor.cli import drift_command, monitor_command

    app.command(name="serve")(serve_command)
    app.command(name="drift")(drift_command)
    app.command(name="monitor")(monitor_command)
    from serving.rollout import cli as rollout

    app.command(name="deploy")(rollout.deploy)
    app.command(name="watch")(rollout.watch)
    app.command(name="promote")(rollout.promote)
    app.command(name="rollback")(rollout.rollback)
    app.command(name="status")(rollout.status)
    app.command(name="stop")(rollout.stop)


_register_commands()


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="aicrush")


if __name__ == "__main__":  # pragma: no cover
    main()
