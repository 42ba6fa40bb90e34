"""The rollout pipeline: canary deployment, metric-gated analysis, promotion or rollback.

Wiring only. The training pipeline chains it when its evaluation gate passes, passing the
registered version; on its own it rolls out the version with alias ``challenger``.
"""

from kfp import dsl

from components.analyze_canary import analyze_canary
from components.deploy_canary import deploy_canary
from components.promote_or_rollback import promote_or_rollback


@dsl.pipeline(
    name="aicrush-rollout",
    description="Canary rollout of a registered model version, gated by metrics.",
)
def rollout_pipeline(
    config: dict,
    state_dir: str = "",
    backend: str = "kubernetes",
    model_version: str = "",
    canary_percent: int = 0,
) -> str:
    """Roll ``model_version`` out next to the champion.

    Args:
        config: the validated aicrush config (JSON dict, with its ``rollout`` section).
        state_dir: local state folder (local runs).
        backend: "kubernetes" (KServe InferenceService) or "local" (kfp.local runs).
        model_version: the registered version; "" for alias ``challenger``.
        canary_percent: initial canary traffic; 0 for the first of ``rollout.steps``.
    Returns:
        the champion's version when the rollout ends.
    """
    deployed = deploy_canary(
        config=config,
        state_dir=state_dir,
        backend=backend,
        model_version=model_version,
        canary_percent=canary_percent,
    )
    analysis = analyze_canary(config=config, state_dir=state_dir, backend=backend).after(deployed)
    final = promote_or_rollback(
        config=config, state_dir=state_dir, backend=backend, decision=analysis.outputs["Output"]
    )
    return final.output
