"""``RolloutConfig``: the canary steps, intervals and thresholds, validated once, strictly.

Attached to the aicrush config as the ``rollout:`` section; every key has a default so an empty
section is a working rollout (10 -> 25 -> 50 -> 100 %, one minute per step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    # allow_inf_nan=False as aicrush.config.StrictModel: a YAML `.inf` or `.nan` is a config
    # error naming the key (as JSON, where the config travels, they become null).
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class ThresholdsConfig(_Strict):
    """When the canary counts as worse than the stable revision (checked over each window)."""

    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Canary 5xx share above this rolls back at once (0.01 = 1 %).",
    )
    max_p99_latency_s: float = Field(
        default=1.0, gt=0, description="Absolute ceiling on the canary's p99 latency."
    )
    max_p99_latency_ratio: float = Field(
        default=2.0, gt=0, description="Canary p99 may be at most this many times the stable p99."
    )
    min_agreement: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Least share of mirrored requests where canary and stable predict the same label "
        "(0 disables; a retrained model is expected to disagree somewhat).",
    )
    max_label_distance: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Largest total-variation distance between the canary's and the stable's predicted-"
        "label distributions (1 disables).",
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        description="A window with fewer canary requests is not judged (the step waits).",
    )
    min_latency_samples: int = Field(
        default=100,
        ge=1,
        description="Requests in the window from which the latency checks use the p99. With "
        "fewer they use the second-slowest request (quantile 1 - 2/n): below 100 a p99 is the "
        "slowest request alone, so one cold or unlucky request decided it.",
    )


class RolloutConfig(_Strict):
    """How a canary is stepped up and judged. Thresholds apply to the canary vs the stable revision."""

    steps: tuple[int, ...] = Field(
        default=(10, 25, 50, 100),
        description="Canary traffic percentages, increasing, ending at 100.",
    )
    interval_s: float = Field(default=60.0, gt=0, description="How long each step is watched.")
    poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often metrics are read within a step (bounds the time to roll back).",
    )
    max_step_wait_s: float = Field(
        default=600.0,
        gt=0,
        description="A step that cannot gather min_requests within this time fails the analysis "
        "(no traffic means no evidence).",
    )
    on_insufficient_traffic: Literal["rollback", "hold"] = Field(
        default="rollback",
        description="What to do when max_step_wait_s passes without enough requests.",
    )
    mirror_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Local backend: share of stable requests also sent to the canary.",
    )
    thresholds: ThresholdsConfig = ThresholdsConfig()
    namespace: str = Field(
        default="aicrush", description="Kubernetes namespace of the InferenceService."
    )
    ready_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Kubernetes backend: how long a deploy, traffic step, promotion or rollback "
        "waits for KServe to report the revision Ready and the traffic split done (cold starts "
        "and model downloads count here, not in the analysis).",
    )
    ready_poll_s: float = Field(
        default=2.0, gt=0, description="How often that wait reads the InferenceService status."
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc.cluster.local:9090",
        description="Prometheus HTTP API base URL (Kubernetes backend).",
    )
    prometheus_step_s: int = Field(
        default=1,
        ge=1,
        le=300,
        description="Step (seconds) of the analysis' counting subquery (docs/rollout.md, "
        "'Counting in Prometheus'): counts are exact when it is at most the scrape interval; "
        "each query evaluates window / step steps per matching series, so with many series "
        "set it to the scrape interval.",
    )
    drift_monitor_url: str = Field(
        default="",
        description="The drift monitor's ingest URL, where the model servers send their payload "
        "logs. Kubernetes backend: empty means http://aicrush-drift-monitor.<namespace>.svc"
        ".cluster.local/. Local backend: empty means no payload logging (start one with "
        "'aicrush monitor' and put its URL here).",
    )
    drift_gate: bool = Field(
        default=True,
        description="Use the drift monitor's verdict on the canary's last closed window as an "
        "analysis check (drifted: roll back). No verdict yet, or no monitor: no check.",
    )
    cpu_request: str = "1"
    cpu_limit: str = Field(
        default="1",
        description="CPU limit of each model server pod. 1: one server process is bound by its "
        "own Python work at about one core, so 1-CPU replicas serve the most per CPU (two 1-CPU "
        "processes 1,543 rps vs one 2-CPU process 1,171 on the same 2 cores, docs/serving.md).",
    )
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=3, ge=1)
    service_account: str = Field(
        default="aicrush-serve",
        description="Kubernetes service account of the model server pods (Kubernetes backend): "
        "the one with read access to the registry's gs:// artifacts (Workload Identity, "
        "manifests/base/rbac.yaml).",
    )

    @model_validator(mode="after")
    def _steps(self) -> RolloutConfig:
        if not self.steps:
            raise ValueError("rollout.steps must not be empty; e.g. [10, 25, 50, 100]")
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("rollout.steps must be percentages in 1..100")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError("rollout.steps must be strictly increasing")
        if self.steps[-1] != 100:
            raise ValueError(
                "rollout.steps must end at 100 (the last step is full traffic before promotion)"
            )
        if self.poll_s > self.interval_s:
            raise ValueError("rollout.poll_s must not exceed rollout.interval_s")
        if self.max_step_wait_s < self.interval_s:
            # A step lasts at least interval_s: the wait limit would end every step first and
            # roll back canaries that pass.
            raise ValueError(
                f"rollout.max_step_wait_s ({self.max_step_wait_s:g}) must be at least "
                f"rollout.interval_s ({self.interval_s:g}), the least time a step lasts"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError("rollout.min_replicas must not exceed rollout.max_replicas")
        return self

    def monitor_url(self) -> str:
        return (
            self.drift_monitor_url
            or f"http://aicrush-drift-monitor.{self.namespace}.svc.cluster.local/"
        )
