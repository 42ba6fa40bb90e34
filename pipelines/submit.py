"""Submit the compiled training pipeline to a Kubeflow Pipelines endpoint."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from aicrush.config import AicrushConfig
from pipelines.compile import compile_training_pipeline


@dataclass(frozen=True)
class Submission:
    run_id: str
    run_url: str
    experiment: str


def submit_training_pipeline(
    cfg: AicrushConfig,
    host: str,
    experiment: str = "aicrush",
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    state_dir: str = "/tmp/aicrush",
) -> Submission:
    """Compile for ``cfg`` and create a run through ``kfp.Client`` with the config as parameter."""
    import kfp

    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_training_pipeline(Path(tmp) / "aicrush-training.yaml", cfg)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments={"config": cfg.to_dict(), "state_dir": state_dir},
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
        )
    return Submission(
        run_id=run.run_id,
        run_url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
        experiment=experiment,
    )
