"""The compiled training pipeline on an emulated cluster: each step its own "pod".

Each task of the compiled IR runs its own container command (``kfp.dsl.executor_main``) as a
process with an empty working directory, HOME and TMPDIR. Between tasks only the declared
parameters pass, and each output artifact's own path, copied into an artifact store as KFP's
launcher uploads it; ``state_dir`` is relative, so every step's state folder is its own pod's.
The registry is a real MLflow tracking server, as ``registry.tracking_uri`` names in a cluster.

It shows that no step reads what an earlier step left on its own disk (the cluster rule of
docs/ARCHITECTURE.md): the run registers a version whose artifacts come from the store, and the
evaluation's predictions reach the store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import build_config
from aicrush.registry import CHALLENGER, client
from tests.cluster.kfp_driver import base_env, run_pipeline
from tests.mlflow_server import mlflow_server

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]


def test_training_pipeline_runs_with_each_step_in_its_own_pod(tmp_path: Path) -> None:
    from pipelines.compile import compile_pipeline
    from pipelines.training import STEPS

    with mlflow_server(tmp_path / "mlflow") as server:
        cfg = build_config(
            {
                "ingest": {"sources": ["python-environment"]},
                "registry": {"tracking_uri": server.url},
                # mechanics, not quality: the gate's floors are tested in test_evaluate_model
                "evaluate": {"min_macro_f1": 0.0, "baseline_gate": False},
            },
            preset="tiny",
        )
        ir = compile_pipeline("training", tmp_path / "training.yaml", cfg)
        run = run_pipeline(
            ir,
            {"config": cfg.to_dict(), "state_dir": "state"},  # relative: each pod's own folder
            tmp_path / "pods",
            base_env({}),
            timeout_s=900,
            discard_pods=True,  # a pod's disk goes with it
        )
        print(run.timings())  # pytest -s
        logs = {name: task.log[-3000:] for name, task in run.tasks.items() if task.returncode}
        assert not run.failed, logs
        assert not (tmp_path / "pods" / "train-model" / "outputs").exists()  # discarded
        assert set(run.tasks) == set(STEPS)  # every step ran, each in its own "pod"
        register = run.tasks["register-model"].outputs
        assert register["model_version"] and register["model_name"] == cfg.registry.model_name

        mlflow = client(server.url)
        version = mlflow.get_model_version_by_alias(cfg.registry.model_name, CHALLENGER)
        assert version.version == str(register["model_version"])
        store = tmp_path / "pods" / "artifact-store"
        predictions = pd.read_parquet(store / "evaluate-model" / "predictions")
        assert len(predictions) > 0 and {"label", "prediction"} <= set(predictions.columns)
