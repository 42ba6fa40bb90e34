"""promote_or_rollback: act on the analysis: the canary becomes champion, or traffic returns to it."""

from typing import Any

from components import pipeline_component


def run_promote_or_rollback(
    config: dict[str, Any],
    state_dir: str,
    backend: str,
    decision: str,
    canary_version: str = "",
    run_id: str = "",
) -> str:
    """Protocol glue: promote on "promote" (also finishing a promotion whose registry step
    failed), leave a "held" canary as it is, make sure of the rollback otherwise; returns the
    champion version."""
    from serving.rollout import open_rollout
    from serving.rollout.cli import configs_from_dict

    cfg, rollout_cfg = configs_from_dict(config)
    rollout = open_rollout(backend, cfg, rollout_cfg, state_dir or None)
    status = rollout.status()
    phase = status["phase"]
    expected = canary_version or None
    if phase == "canary" and expected is not None and status["canary"] != expected:
        # Another canary than this run's is in progress (a person's change): not this run's
        # to promote or roll back.
        print(f"the canary is now version {status['canary']}, not {expected}: left as it is")
    elif phase == "canary" and run_id and rollout.store.load().owner != run_id:
        print(f"a person took canary version {status['canary']} over from this run: left as it is")
    elif phase == "canary" and decision not in ("held", "changed"):
        if decision == "promote":
            rollout.promote(reason="pipeline analysis passed", expected=expected)
        else:
            rollout.rollback(reason=f"pipeline decision {decision!r}", expected=expected)
    elif phase == "promoted" and decision == "promote" and status["champion"] != status["stable"]:
        rollout.promote(reason="pipeline analysis passed")  # finishes the registry's part
    champion = rollout.registry.champion()
    return champion.version if champion else ""


@pipeline_component
def promote_or_rollback(
    config: dict,
    state_dir: str,
    backend: str,
    decision: str,
    canary_version: str = "",
    run_id: str = "",
) -> str:
    """Promote the canary (alias ``champion`` moves to it, 100 % traffic) or roll it back (0 %).

    Args:
        config: the validated aicrush config (JSON dict).
        state_dir: local state folder.
        backend: "local" or "kubernetes".
        decision: analyze_canary's output ("promote" promotes; "held" leaves the canary as it
            is; anything else rolls back a running canary).
        canary_version: the canary this run deployed; another one in progress is left alone.
        run_id: the KFP run's id; a canary a person took over from this run is left alone.
    Returns:
        the champion's version after the step.
    """
    from components.promote_or_rollback import run_promote_or_rollback

    return run_promote_or_rollback(config, state_dir, backend, decision, canary_version, run_id)
