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
        import kfp

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
        ValueError: not ``scheme://bucket[/prefix]``, or not ``gs://`` for a TrainJob.
    """
    from components.trainjob import needs_trainjob

    scheme, sep, rest = root.partition("://")
    if not sep or not scheme or not rest.strip("/"):
        raise ValueError(f"{root!r} is not a URI with a bucket, e.g. gs://my-bucket/pipeline-root")
    if pipeline == "training" and scheme != "gs" and needs_trainjob(cfg):
        raise ValueError(
            f"{root!r}: train.distributed asks for a Kubeflow Trainer TrainJob, "
            "whose nodes read the features and write the model through GCS; give a gs:// root "
            "or train on one GPU (docs/distributed-training.md)"
        )


def submit_training_pipeline(
    cfg: AicrushConfig, host: str, experiment: str = "aicrush", **kwargs: Any
) -> Submission:
    """The training pipeline (see :func:`submit_pipeline`)."""
    return submit_pipeline("training", cfg, host, experiment, **kwargs)
