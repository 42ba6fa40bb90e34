"""Submit a compiled pipeline (training or rollout) to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicrush.config import AicrushConfig
from pipelines.compile import PipelineName, compile_pipeline


@dataclass(frozen=True)
class Submission:
    run_id: str
    run_url: str
    experiment: str
    pipeline: str


def submit_pipeline(
    pipeline: PipelineName,
    cfg: AicrushConfig,
    host: str,
    experiment: str = "aicrush",
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    arguments: dict[str, Any] | None = None,
    client: Any = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> Submission:
    """Compile ``pipeline`` for ``cfg`` and create a run through ``kfp.Client`` with the config
    as its ``config`` parameter (plus ``arguments``, e.g. ``model_version`` for the rollout).

    pipeline_root: where the run's artifacts go (``gs://bucket/prefix``); None keeps the
    cluster's default (the ``kfp-launcher`` ConfigMap's ``defaultPipelineRoot``, MinIO in a
    standalone install). service_account: the Kubernetes service account the run's pods use
    (None: the profile's ``default-editor``).

    Raises:
        ValueError: ``pipeline_root`` is not a ``gs://`` URI while ``train.distributed`` asks for
            a Kubeflow Trainer TrainJob, whose nodes exchange the run's files through GCS.
    """
    if pipeline_root is not None:
        check_pipeline_root(pipeline_root, cfg, pipeline)
    if client is None:
        import warnings

        import kfp

        with warnings.catch_warnings():  # kfp's notice on every Client, not about this call
            warnings.filterwarnings("ignore", message="This client only works with Kubeflow")
            client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, Path(tmp) / f"aicrush-{pipeline}.yaml", cfg)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments={"config": cfg.to_dict(), **(arguments or {})},
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    return Submission(
        run_id=run.run_id,
        run_url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
        experiment=experiment,
        pipeline=pipeline,
    )


def check_pipeline_root(root: str, cfg: AicrushConfig, pipeline: PipelineName) -> None:
    """Refuse a ``--pipeline-root`` the run could not work with (see :func:`submit_pipeline`).

    Raises:
        ValueError: not ``scheme://bucket[/prefix]`` (lowercase scheme, no spaces), or not
            ``gs://`` for a TrainJob.
    """
    from components.trainjob import needs_trainjob

    scheme, sep, rest = root.partition("://")
    if root != root.strip() or " " in root:
        raise ValueError(f"{root!r} holds spaces; write e.g. gs://my-bucket/pipeline-root")
    if not sep or not scheme or not rest.split("/")[0]:
        raise ValueError(f"{root!r} is not a URI with a bucket, e.g. gs://my-bucket/pipeline-root")
    if scheme != scheme.lower():
        raise ValueError(f"{root!r}: write the scheme in lowercase ({scheme.lower()}://)")
    if pipeline == "training" and scheme != "gs" and needs_trainjob(cfg):
        raise ValueError(
            f"{root!r}: train.distributed asks for a Kubeflow Trainer TrainJob, "
            "whose nodes read the features and write the model through GCS; give a gs:// root "
            "or train on one GPU (docs/distributed-training.md)"
        )


@dataclass(frozen=True)
class SourceProblem:
    """A source the cluster's ingest pod may not read; ``fatal``: it certainly cannot."""

    message: str
    fatal: bool = True


def cluster_source_problems(cfg: AicrushConfig) -> list[SourceProblem]:
    """What in ``ingest.sources`` a cluster's ingest pod cannot read: a path on this machine
    (folder, table, local git repository, ``pypi:FILE``/``pypi:FOLDER``), a ``file://`` URL, a
    ``gs://`` without a bucket. Fine: ``gs://bucket/prefix``, https/ssh git URLs,
    ``pypi:NAME==VERSION``, ``pypi:default`` and ``python-environment`` (the image's).
    An absolute path that does not exist here is not fatal: it may be inside a custom image."""
    from aicrush.errors import DataError
    from components.sources.environment import ENVIRONMENT_SOURCE
    from components.sources.git import is_remote_git_url
    from components.sources.pypi import DEFAULT_LIST, PREFIX, parse_pin

    problems = []
    for source in cfg.ingest.sources:
        text = str(source)
        spec = text.removeprefix(PREFIX).strip()
        if text.startswith(PREFIX) and spec == DEFAULT_LIST:
            continue
        if text in ("", ENVIRONMENT_SOURCE) or is_remote_git_url(text):
            continue
        if text.startswith("gs://"):
            if not text.removeprefix("gs://").split("/")[0]:
                problems.append(
                    SourceProblem(f"{text!r} names no bucket: write gs://bucket/prefix")
                )
            continue
        path = Path(spec if text.startswith(PREFIX) else text.removeprefix("file://")).expanduser()
        if text.startswith(PREFIX) and not path.is_absolute() and not path.exists():
            try:  # neither a file nor a folder here: the ingest step reads it as NAME==VERSION
                parse_pin(spec)
            except DataError as err:
                problems.append(SourceProblem(str(err)))
            continue
        if path.is_absolute() and not path.exists():
            problems.append(
                SourceProblem(
                    f"{text!r} is not on this machine, so it must be in the pipeline image's own "
                    "file system; the stock images hold no corpus (upload it to gs:// instead)",
                    fatal=False,
                )
            )
            continue
        problems.append(
            SourceProblem(
                f"{text!r} is read from this machine's disk, which the pipeline's pods do not "
                "see: "
                + (
                    "list the pins themselves (pypi:NAME==VERSION) or upload the archives to gs://"
                    if text.startswith(PREFIX)
                    else "upload it (gcloud storage cp -r PATH gs://BUCKET/PREFIX) and give the "
                    "gs:// prefix, or a git URL"
                )
            )
        )
    return problems


def submit_training_pipeline(
    cfg: AicrushConfig, host: str, experiment: str = "aicrush", **kwargs: Any
) -> Submission:
    """The training pipeline (see :func:`submit_pipeline`)."""
    return submit_pipeline("training", cfg, host, experiment, **kwargs)
