"""finish_rollout: the rollout pipeline's exit handler; a failed run leaves no canary mid-way."""

from typing import Any, NamedTuple

from components import pipeline_component


class FinishOutputs(NamedTuple):
    outcome: str
    champion_version: str


def run_finish_rollout(
    config: dict[str, Any], state_dir: str, backend: str, run_id: str
) -> FinishOutputs:
    """Protocol glue: :meth:`serving.rollout.Rollout.recover` for this run; returns what it did
    and the champion's version after it."""
    from serving.rollout import open_rollout
    from serving.rollout.cli import configs_from_dict

    cfg, rollout_cfg = configs_from_dict(config)
    rollout = open_rollout(backend, cfg, rollout_cfg, state_dir or None)
    outcome = rollout.recover(run_id, reason=f"pipeline run {run_id} ended before its decision")
    print(
        {
            "rolled_back": "the run left its canary in progress: rolled back",
            "promoted": "the run's promotion was not recorded in the registry: finished",
            "held": "the run's canary is held for a person: `aicrush promote` or `aicrush rollback`",
            "not_owner": "the rollout in progress is not this run's: left as it is",
            "nothing": "the run finished its rollout: nothing to do",
        }[outcome]
    )
    champion = rollout.registry.champion()
    return FinishOutputs(outcome, champion.version if champion else "")


@pipeline_component
def finish_rollout(config: dict, state_dir: str, backend: str, run_id: str) -> NamedTuple(  # type: ignore[valid-type]
    "FinishOutputs", [("outcome", str), ("champion_version", str)]
):
    """Exit handler of the rollout pipeline: runs after its steps, whether they passed or not.

    Acts only on the rollout that run ``run_id`` started (``deploy_canary`` records it) and
    nobody took over: its canary still in progress (a step failed or was killed past its
    retries) is rolled back; a rollback or promotion it left unrecorded is finished; a canary
    the analysis held on purpose stays. It reads the rollout's state, not the run's status, so
    it works on every KFP backend. KFP does not start it for a cancelled run (docs/rollout.md).

    Args:
        config: the validated aicrush config (JSON dict).
        state_dir: local state folder.
        backend: "local" or "kubernetes".
        run_id: the KFP run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``).
    Returns:
        outcome ("rolled_back", "promoted", "held", "not_owner" or "nothing") and
        champion_version (the registry's champion after it: the pipeline's output).
    """
    from components.finish_rollout import run_finish_rollout

    return run_finish_rollout(config, state_dir, backend, run_id)
