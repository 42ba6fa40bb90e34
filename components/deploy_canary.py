"""deploy_canary: start a registered model version as a canary next to the champion."""

import json
from typing import Any, NamedTuple

from components import pipeline_component


class DeployOutputs(NamedTuple):
    stable_version: str
    canary_version: str


def run_deploy_canary(
    config: dict[str, Any],
    state_dir: str,
    backend: str,
    model_version: str,
    canary_percent: int,
    run_id: str = "",
) -> DeployOutputs:
    """Protocol glue: validate the config, deploy, print the state. ``model_version`` "" = alias challenger."""
    from serving.rollout import open_rollout
    from serving.rollout.cli import configs_from_dict

    cfg, rollout_cfg = configs_from_dict(config)
    rollout = open_rollout(backend, cfg, rollout_cfg, state_dir or None)
    st = rollout.deploy(model_version or None, canary_percent or None, owner=run_id or None)
    print(json.dumps(rollout.status(), default=str))
    return DeployOutputs(str(st.stable or ""), str(st.canary or ""))


@pipeline_component
def deploy_canary(
    config: dict,
    state_dir: str,
    backend: str,
    model_version: str,
    canary_percent: int,
    run_id: str = "",
) -> NamedTuple("DeployOutputs", [("stable_version", str), ("canary_version", str)]):  # type: ignore[valid-type]
    """Deploy ``model_version`` as a canary with ``canary_percent`` % of the traffic; the champion keeps the rest.

    Args:
        config: the validated aicrush config (JSON dict); its ``rollout`` section sets steps and thresholds.
        state_dir: local state folder (embedded MLflow store, local backend processes).
        backend: "local" (model servers behind a proxy on localhost) or "kubernetes" (a KServe InferenceService).
        model_version: the registered version to roll out; "" for the version with alias ``challenger``.
        canary_percent: initial canary traffic; 0 for the first of ``rollout.steps``.
        run_id: the KFP run's id, recorded as the rollout's owner for the exit handler
            (``finish_rollout``); "" outside a pipeline.
    Returns:
        stable_version (the champion serving the rest) and canary_version ("" when the version was
        deployed as the first champion).
    """
    from components.deploy_canary import run_deploy_canary

    return run_deploy_canary(config, state_dir, backend, model_version, canary_percent, run_id)
