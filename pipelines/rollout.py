"""The rollout pipeline: canary deployment, metric-gated analysis, promotion or rollback.

Wiring only. On its own it rolls out the version with alias ``challenger``. An exit handler
(``finish_rollout``) rolls back a canary the run leaves in progress when a step fails. In the cluster each
step is its own pod: they share nothing but their declared inputs and outputs, the MLflow
registry and the InferenceService, where the Kubernetes backend keeps the rollout's state.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real annotations.

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes

from aicrush.config import AicrushConfig, build_config
from components.analyze_canary import analyze_canary
from components.deploy_canary import deploy_canary
from components.finish_rollout import finish_rollout
from components.promote_or_rollback import promote_or_rollback

PIPELINE_NAME = "aicrush-rollout"


def use_mlflow_server(task: dsl.PipelineTask, cfg: AicrushConfig) -> dsl.PipelineTask:
    """The MLflow server (and its credentials, from a Secret) for a step that talks to it."""
    if cfg.registry.tracking_uri:
        task.set_env_variable("MLFLOW_TRACKING_URI", cfg.registry.tracking_uri)
        if cfg.registry.credentials_secret_name:
            kubernetes.use_secret_as_env(
                task,
                secret_name=cfg.registry.credentials_secret_name,
                secret_key_to_env={
                    "username": "MLFLOW_TRACKING_USERNAME",
                    "password": "MLFLOW_TRACKING_PASSWORD",
                },
            )
    return task


def build_rollout_pipeline(cfg: AicrushConfig | None = None) -> Callable[..., Any]:
    """The rollout pipeline for ``cfg`` (default: the default config): its values are the
    defaults of the ``config`` parameter; the MLflow server comes from ``registry.tracking_uri``."""
    cfg = cfg or build_config()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Canary rollout of a registered model version, gated by metrics.",
    )
    def rollout_pipeline(
        config: dict = cfg.to_dict(),
        state_dir: str = "",
        backend: str = "kubernetes",
        model_version: str = "",
        canary_percent: int = 0,
    ) -> str:
        """Roll ``model_version`` out next to the champion.

        Args:
            config: the validated aicrush config (JSON dict, with its ``rollout`` section).
            state_dir: local state folder (local runs: embedded MLflow, local backend processes).
            backend: "kubernetes" (KServe InferenceService) or "local" (kfp.local runs).
            model_version: the registered version; "" for alias ``challenger``.
            canary_percent: initial canary traffic; 0 for the first of ``rollout.steps``.
        Returns:
            the champion's version when the rollout ends.
        """
        # The exit handler runs after the steps, whether they passed or not: a run whose step
        # fails leaves no canary at a share nobody watches (finish_rollout). KFP does not start
        # it for a cancelled run: `aicrush rollback` or `aicrush watch --take-over` then.
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        finish = finish_rollout(config=config, state_dir=state_dir, backend=backend, run_id=run_id)
        with dsl.ExitHandler(finish, name="rollout"):
            deployed = deploy_canary(
                config=config,
                state_dir=state_dir,
                backend=backend,
                model_version=model_version,
                canary_percent=canary_percent,
                run_id=run_id,
            )
            # The canary this run deployed: the later steps act on it only, not on one a
            # person deployed meanwhile.
            analysis = analyze_canary(
                config=config,
                state_dir=state_dir,
                backend=backend,
                canary_version=deployed.outputs["canary_version"],
                run_id=run_id,
            )
            # A killed or evicted analysis pod starts again from the canary's current step (the
            # state lives beside the InferenceService), instead of leaving it at its share
            # unwatched.
            analysis.set_retry(num_retries=2, backoff_duration="30s")
            final = promote_or_rollback(
                config=config,
                state_dir=state_dir,
                backend=backend,
                decision=analysis.outputs["Output"],
                canary_version=deployed.outputs["canary_version"],
                run_id=run_id,
            )
        # Idempotent: a transient API error in it is retried rather than leaving the canary.
        finish.set_retry(num_retries=2, backoff_duration="30s")
        for task in (deployed, analysis, final, finish):
            task.set_caching_options(False)  # the registry and the cluster change between runs
            use_mlflow_server(task, cfg)
        return finish.outputs["champion_version"]

    return rollout_pipeline


#: The rollout pipeline for the default config (kfp.local runs and tests).
rollout_pipeline = build_rollout_pipeline()
