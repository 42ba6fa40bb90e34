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
) -> Submission:
    """Compile ``pipeline`` for ``cfg`` and create a run through ``kfp.Client`` with the config
    as its ``config`` parameter (plus ``arguments``, e.g. ``model_version`` for the rollout)."""
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
        )
    return Submission(
        run_id=run.run_id,
        run_url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
        experiment=experiment,
        pipeline=pipeline,
    )


def submit_training_pipeline(
    cfg: AicrushConfig, host: str, experiment: str = "aicrush", **kwargs: Any
) -> Submission:
    """The training pipeline (see :func:`submit_pipeline`)."""
    return submit_pipeline("training", cfg, host, experiment, **kwargs)
