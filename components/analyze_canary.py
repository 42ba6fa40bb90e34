"""analyze_canary: step the canary up while its metrics hold; roll it back at the first failed check."""

import json
from typing import Any

from kfp.dsl import Metrics, Output

from components import pipeline_component


def run_analyze_canary(
    config: dict[str, Any],
    state_dir: str,
    backend: str,
    analysis: Any,
    canary_version: str = "",
    run_id: str = "",
) -> str:
    """Protocol glue: run the analysis (no automatic promotion), log the last verdict, return the decision.

    Returns "promote" (every step passed; the canary holds 100 %), "rolled_back" (a check failed;
    already rolled back), "held" (a step ran out of time without a verdict and
    ``rollout.on_insufficient_traffic`` is ``hold``: the canary keeps its share for a person) or
    "none" (no canary in progress, e.g. the first champion was deployed), or "changed" (the
    canary in progress is not ``canary_version``, the one this run deployed: a person rolled it
    back and deployed another meanwhile, or took it over from run ``run_id``; nothing is
    changed).
    """
    from serving.rollout import CanaryChanged, CanaryHeld, RolloutError, open_rollout
    from serving.rollout.cli import configs_from_dict

    cfg, rollout_cfg = configs_from_dict(config)
    rollout = open_rollout(backend, cfg, rollout_cfg, state_dir or None)
    try:
        st = rollout.analyze(
            auto_promote=False, expected=canary_version or None, owner=run_id or None
        )
    except CanaryChanged as err:
        analysis.metadata["decision"] = "changed"
        analysis.metadata["reason"] = str(err)
        print(f"not analysed: {err}")
        return "changed"
    except CanaryHeld as err:
        analysis.metadata["decision"] = "held"
        analysis.metadata["reason"] = str(err)
        print(f"canary held: {err}")
        return "held"
    except RolloutError as err:
        if "no canary in progress" not in str(err):
            raise
        st = rollout.store.load()
        if st.phase != "rolled_back":
            return "none"
        # An earlier attempt of this step rolled the canary back (this run's deploy made it the
        # canary) and was killed or timed out after: finish its record, report its decision.
        if st.rollback_unrecorded:
            rollout.rollback(reason="a retried analysis found the canary rolled back")
        analysis.metadata["decision"] = "rolled_back"
        return "rolled_back"
    last = st.last_analysis or {}
    for check in last.get("checks", []):
        if check.get("value") is not None:
            analysis.log_metric(check["name"], float(check["value"]))
    analysis.log_metric("canary_requests", float(last.get("canary_requests", 0)))
    decision = "promote" if st.phase == "canary" else "rolled_back"
    analysis.metadata["decision"] = decision
    # What the analysis could not measure is part of its result, not a silent gap.
    analysis.metadata["not_measured"] = list(last.get("not_measured", []))
    print(json.dumps(last, default=str))
    return decision


@pipeline_component
def analyze_canary(
    config: dict,
    state_dir: str,
    backend: str,
    analysis: Output[Metrics],
    canary_version: str = "",
    run_id: str = "",
) -> str:
    """Watch the canary through ``rollout.steps``: 5xx rate, p99 latency, agreement vs the champion.

    A failed check rolls the canary back at once (within one ``rollout.poll_s``).

    Args:
        config: the validated aicrush config (JSON dict) with its ``rollout`` section.
        state_dir: local state folder.
        backend: "local" or "kubernetes".
        analysis: the last window's checks (error_rate, p99_latency_s, ...) as metrics.
        canary_version: the canary this run deployed (deploy_canary's output); "" for whichever
            is in progress.
        run_id: the KFP run's id; a canary a person took over from this run is left alone.
    Returns:
        "promote", "rolled_back", "held" (``rollout.on_insufficient_traffic: hold`` and no
        verdict in time), "changed" (another canary is in progress now) or "none" (nothing to
        analyze).
    """
    from components.analyze_canary import run_analyze_canary

    return run_analyze_canary(config, state_dir, backend, analysis, canary_version, run_id)
