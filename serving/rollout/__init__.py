"""Canary rollout of a registered model: one state machine (:mod:`.machine`), metric-gated
analysis (:mod:`.analysis`, :mod:`.metrics_source`), two backends (:mod:`.local`: a splitting
proxy on localhost; :mod:`.kubernetes`: a KServe InferenceService) and the MLflow bookkeeping
(:mod:`.registry`). :func:`open_rollout` wires them for the CLI and the pipeline components.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from aicrush.rollout_config import RolloutConfig, ThresholdsConfig
from serving.rollout.machine import (
    CanaryChanged,
    CanaryHeld,
    ModelRef,
    Rollout,
    RolloutError,
    RolloutState,
)

__all__ = [
    "CanaryChanged",
    "CanaryHeld",
    "ModelRef",
    "Rollout",
    "RolloutConfig",
    "RolloutError",
    "RolloutState",
    "ThresholdsConfig",
    "open_rollout",
    "rollout_dir",
]

BackendName = Literal["local", "kubernetes"]


def rollout_dir(state: Path) -> Path:
    """``<state>/rollout``: processes, ports, split and last analysis of the local backend; machine state."""
    return state / "rollout"


def open_rollout(
    backend: str,
    cfg: Any,
    rollout_cfg: RolloutConfig,
    state: Path | str | None,
    tracking_uri: str | None = None,
    **backend_options: Any,
) -> Rollout:
    """The rollout of ``cfg.registry.model_name`` on ``backend`` ("local" or "kubernetes").

    ``cfg`` is the validated ``AicrushConfig`` (its ``registry`` section names the MLflow store
    and the model; ``registry.model_name`` is also the served model's name and the
    InferenceService's). The local backend keeps the machine's state in
    ``<state>/rollout/state-local.json``; the Kubernetes backend on the InferenceService, so no
    local file is read or written and ``state`` only matters for an embedded MLflow store.
    """
    from aicrush.state import resolve_tracking_uri
    from aicrush.state import state_dir as resolve_state
    from serving.rollout.registry import MlflowRolloutRegistry

    # A state folder only where something local needs one (the local backend, or an embedded
    # MLflow store): a cluster step with an MLflow server leaves its (empty) disk untouched.
    uri = tracking_uri or resolve_tracking_uri(cfg.registry, state)
    registry = MlflowRolloutRegistry(uri, cfg.registry.model_name, backend=backend)
    if backend == "local":
        from serving.rollout.local import LocalBackend

        options = {"log_to": rollout_cfg.drift_monitor_url, **backend_options}
        b: Any = LocalBackend(
            rollout_dir(resolve_state(state)),
            model_name=cfg.registry.model_name,
            mirror_fraction=rollout_cfg.mirror_fraction,
            **options,
        )
    elif backend == "kubernetes":
        from serving.rollout.kubernetes import KubernetesBackend

        b = KubernetesBackend(rollout_cfg, cfg.registry.model_name, **backend_options)
    else:
        raise RolloutError(f"unknown rollout backend {backend!r}; choose local or kubernetes")
    drift = b.drift_verdict() if rollout_cfg.drift_gate else None
    store = (
        b.state_store()
        if hasattr(b, "state_store")
        else rollout_dir(resolve_state(state)) / f"state-{backend}.json"
    )
    return Rollout(b, registry, rollout_cfg, store, drift=drift)
