"""Metric-gated canary checks (the Flagger / Argo Rollouts analysis), as pure functions.

A window of counters for the stable and the canary version goes in; a verdict comes out:
``pass`` (every check within its threshold), ``fail`` (some check broke; roll back) or
``wait`` (too few canary requests to judge yet). A check that is enabled but could not be
measured in the window is listed in ``Verdict.not_measured`` with the reason, never dropped
silently: e.g. agreement on the Kubernetes backend (Knative does not mirror traffic), or drift
before the monitor closed a window of the canary's version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aicrush.rollout_config import ThresholdsConfig
from serving.rollout.metrics_source import Counters

Outcome = Literal["pass", "fail", "wait"]
#: Optional drift hook: (version, since) -> True (drifted), False (no drift) or None (no monitor,
#: or no window of that version analysed at or after ``since``, epoch seconds; None: any window).
DriftVerdict = Callable[[str, "float | None"], "bool | None"]


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    checks: tuple[Check, ...] = ()
    canary_requests: float = 0.0
    stable_requests: float = 0.0
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Checks that are enabled but had nothing to measure in this window: "name: why".
    not_measured: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        d["not_measured"] = list(self.not_measured)
        return d


#: 5xx responses that fail a canary before ``min_requests`` when they break the error budget.
EARLY_FAIL_ERRORS = 5


def label_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Total-variation distance between two label-count distributions (0 same, 1 disjoint)."""
    ta, tb = sum(a.values()), sum(b.values())
    if not ta or not tb:
        return float("nan")
    return 0.5 * sum(abs(a.get(k, 0.0) / ta - b.get(k, 0.0) / tb) for k in set(a) | set(b))


def _failed_reason(check: Check, canary_version: str) -> str:
    """One failed check for the rollback reason, in words a person reads in ``aicrush status``."""
    if check.name == "drift":
        return (
            f"drift: the drift monitor's last closed window of version {canary_version} drifted "
            "from its training reference (see the monitor's /reports)"
        )
    return f"{check.name} {check.value:.4g} beyond {check.threshold:.4g}"


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def judge(
    stable: Counters,
    canary: Counters,
    t: ThresholdsConfig,
    *,
    canary_version: str = "",
    drift: DriftVerdict | None = None,
    drift_since: float | None = None,
) -> Verdict:
    """Judge one window of canary vs stable.

    ``drift_since``: the canary's deploy time (epoch seconds); the drift check counts only a
    monitor window of the canary's version analysed since then, not one left from an earlier
    deployment of the same version.

    Below ``min_requests`` canary requests the window is not evidence (``wait``), except for
    errors: five or more 5xx that already break ``max_error_rate`` fail it at once. Nothing else
    can pass or fail it early, so a canary is never passed on fewer than ``min_requests``.
    """
    rate = canary.error_rate
    error_check = Check(
        "error_rate",
        rate,
        t.max_error_rate,
        rate <= t.max_error_rate,
        f"canary 5xx {canary.errors:.0f}/{canary.requests:.0f}; stable {stable.error_rate:.3%}",
    )
    if canary.requests < t.min_requests:
        if canary.errors >= EARLY_FAIL_ERRORS and not error_check.ok:
            return Verdict(
                "fail",
                (error_check,),
                canary.requests,
                stable.requests,
                f"error_rate {rate:.4g} beyond {t.max_error_rate:.4g} "
                f"({canary.errors:.0f} errors before {t.min_requests} requests)",
            )
        return Verdict(
            "wait",
            canary_requests=canary.requests,
            stable_requests=stable.requests,
            reason=f"{canary.requests:.0f} canary requests so far; need {t.min_requests} to judge",
        )
    checks: list[Check] = [error_check]
    unmeasured: list[str] = []
    # The latency quantile: p99 once there are min_latency_samples requests; below that, the
    # second-slowest request (quantile 1 - 2/n; a p99 of fewer than 100 is the slowest alone, so
    # one cold request decided it), so a canary that is slow throughout still fails.
    n = canary.requests
    q = 0.99 if n >= t.min_latency_samples else max(0.5, 1 - 2 / max(n, 1))
    label = "p99" if q == 0.99 else f"p{q * 100:.0f} (fewer than {t.min_latency_samples} requests)"
    p99_c, p99_s = _finite(canary.quantile(q)), _finite(stable.quantile(q))
    if p99_c is not None:
        checks.append(
            Check(
                "p99_latency_s",
                p99_c,
                t.max_p99_latency_s,
                p99_c <= t.max_p99_latency_s,
                f"canary {label} over {n:.0f} requests",
            )
        )
        if p99_s is not None and p99_s > 0 and stable.requests >= t.min_requests:
            ratio = p99_c / p99_s
            checks.append(
                Check(
                    "p99_latency_ratio",
                    ratio,
                    t.max_p99_latency_ratio,
                    ratio <= t.max_p99_latency_ratio,
                    f"canary {label} {p99_c:.4f}s vs stable {p99_s:.4f}s",
                )
            )
        else:
            unmeasured.append(
                f"p99_latency_ratio: {stable.requests:.0f} stable requests in this window; need "
                f"{t.min_requests} (at 100 % the stable version gets none)"
            )
    else:
        unmeasured.append("p99_latency_s: no latency histogram for the canary in this window")
    if t.min_agreement > 0:
        agreement = _finite(canary.agreement)
        if agreement is not None:
            checks.append(
                Check(
                    "agreement",
                    agreement,
                    t.min_agreement,
                    agreement >= t.min_agreement,
                    f"{canary.agreed:.0f}/{canary.mirrored:.0f} mirrored requests agree",
                )
            )
        else:
            unmeasured.append(
                "agreement: no mirrored requests in this window (only the local backend's proxy "
                "mirrors traffic; Knative does not)"
            )
    if t.max_label_distance < 1:
        dist = _finite(label_distance(canary.labels, stable.labels))
        if dist is not None:
            checks.append(
                Check("label_distance", dist, t.max_label_distance, dist <= t.max_label_distance)
            )
        else:
            unmeasured.append("label_distance: no predicted labels of one of the versions")
    if drift is None:
        unmeasured.append("drift: rollout.drift_gate is off")
    elif canary_version:
        drifted = drift(canary_version, drift_since)
        if drifted is not None:
            checks.append(
                Check("drift", 1.0 if drifted else 0.0, 0.0, not drifted, "drift monitor verdict")
            )
        else:
            unmeasured.append(
                f"drift: the drift monitor has no verdict on version {canary_version} "
                + ("since its deploy " if drift_since is not None else "")
                + "yet (no window closed, or the monitor is unreachable)"
            )
    failed = [c for c in checks if not c.ok]
    return Verdict(
        "fail" if failed else "pass",
        tuple(checks),
        canary.requests,
        stable.requests,
        "; ".join(_failed_reason(c, canary_version) for c in failed),
        not_measured=tuple(unmeasured),
    )
