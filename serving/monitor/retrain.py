"""Start the retraining pipeline on sustained drift: rate-limited, and every decision recorded.

A hook is any callable ``(model, version, result) -> str`` that starts a run and says which
(a process id, a KFP run id). Two are provided: :func:`embedded_hook` runs ``aicrush run ...``
as a subprocess (the local pipeline through kfp.local), :func:`cluster_hook` submits a compiled
pipeline package to Kubeflow Pipelines with ``kfp.Client().create_run_from_pipeline_package``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from serving.monitor.drift import DriftResult
from serving.monitor.state import MonitorState

log = logging.getLogger(__name__)

RetrainHook = Callable[[str, str, DriftResult], str]


def embedded_hook(args: Sequence[str] = ("aicrush", "run")) -> RetrainHook:
    """A hook that starts ``args`` (default ``aicrush run``) as a detached subprocess."""

    def start(model: str, version: str, result: DriftResult) -> str:
        proc = subprocess.Popen(
            list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        return f"pid {proc.pid}: {' '.join(args)}"

    return start


def cluster_hook(
    host: str,
    package_path: str,
    arguments: dict[str, Any] | None = None,
    experiment_name: str = "aicrush-retraining",
    pipeline_root: str | None = None,
    service_account: str | None = None,
    namespace: str | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> RetrainHook:
    """A hook that submits the compiled pipeline ``package_path`` to the KFP endpoint ``host``.

    ``pipeline_root`` (``gs://bucket/prefix``), ``service_account`` and ``namespace`` are what
    ``aicrush submit`` passes as ``--pipeline-root``, ``--service-account`` and ``--namespace``
    (docs/deploy-gke.md, step 9); None keeps the cluster's defaults (a MinIO root in a standalone
    install, where a distributed TrainJob cannot run). ``client_factory`` stands in for
    ``kfp.Client`` (tests)."""

    def start(model: str, version: str, result: DriftResult) -> str:
        if client_factory is None:
            import kfp

            factory: Callable[..., Any] = kfp.Client
        else:
            factory = client_factory
        client = factory(host=host, namespace=namespace)
        run = client.create_run_from_pipeline_package(
            package_path,
            arguments=dict(arguments or {}),
            run_name=f"retrain-{model}-v{version}-{int(time.time())}",
            experiment_name=experiment_name,
            namespace=namespace,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
        return f"kfp run {run.run_id}"

    return start


@dataclass
class RetrainPolicy:
    """Retrain after ``sustained_windows`` drifted windows in a row, at most once per
    ``min_interval_s`` per model (also across restarts: the last start is read from the state)."""

    sustained_windows: int = 3
    min_interval_s: float = 6 * 3600.0


class RetrainTrigger:
    """Counts consecutive drifted windows per model version and calls the hook when sustained."""

    def __init__(
        self, hook: RetrainHook | None, policy: RetrainPolicy, state: MonitorState | None = None
    ):
        """``state`` records decisions and past starts; the :class:`Monitor` sets its own when None."""
        self.hook = hook
        self.policy = policy
        self.state = state
        self.consecutive: dict[tuple[str, str], int] = {}

    def observe(
        self, model: str, version: str, result: DriftResult, now: float | None = None
    ) -> str:
        """Feed one window's verdict; return the decision (``none``, ``started``, ``rate_limited``,
        ``disabled``, ``failed``). Every decision other than ``none`` is recorded in the state."""
        if self.state is None:
            raise RuntimeError("RetrainTrigger has no state: pass one or hand it to a Monitor")
        key = (model, version)
        self.consecutive[key] = self.consecutive.get(key, 0) + 1 if result.dataset_drift else 0
        if self.consecutive[key] < self.policy.sustained_windows:
            return "none"
        now = time.time() if now is None else now
        if self.hook is None:
            outcome, detail = "disabled", "no retraining hook configured"
        else:
            last = self.state.last_retrain_started(model)
            if last is not None and now - last < self.policy.min_interval_s:
                outcome = "rate_limited"
                detail = f"last start {now - last:.0f} s ago < {self.policy.min_interval_s:.0f} s"
            else:
                try:
                    outcome, detail = "started", self.hook(model, version, result)
                except Exception as exc:  # the monitor must keep running
                    log.exception("retraining hook failed")
                    outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        self.state.record_retrain(model, version, outcome, detail, at=now)
        if outcome == "started":
            self.consecutive[key] = 0
        return outcome
