"""Training larger than one GPU: the train step launches a Kubeflow Trainer ``TrainJob`` and waits.

When the pipeline runs in the cluster (its artifacts live in ``gs://``) and
``train.distributed`` asks for more than one GPU in all (``num_nodes x processes_per_node x
gpus_per_process``), the ``train_model`` step does not train itself: it creates a
``trainer.kubeflow.org/v1alpha1`` TrainJob on the ``train.distributed.runtime``
ClusterTrainingRuntime (stock ``torch-distributed``), follows its status, and on success copies
the model folder and metrics the job wrote to object storage into its own output artifacts, so
downstream steps see the same artifacts as a single-GPU run.

What the TrainJob runs: ``torchrun --module components.train_worker --config ... --features ...
--model-output ... --checkpoint-dir ... --metrics-output ...`` in the training image. The torch
runtime's plugin gives every node ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``,
``PET_MASTER_ADDR`` and ``PET_MASTER_PORT``; torchrun reads them as the defaults of its options
(``torch.distributed.argparse_util.env``), so the command names none of them and must start with
torchrun (the plugin only sets the variables; a plain ``python`` would ignore them). Those names
are reserved: the trainer's ``env`` must not set them (the plugin's admission check refuses it).

Why plain ``dict`` bodies and the ``kubernetes`` client rather than the Kubeflow SDK
(``kubeflow.trainer.TrainerClient``): the SDK reads the ClusterTrainingRuntime (a cluster-scoped
object: a ClusterRole for the pipeline's service account, where a namespaced Role on
``trainjobs`` is enough here), generates its own job names (a retried step must find its job by a
name derived from the run), and would add three packages to the images; the body below is
validated in the tests against the real TrainJob CRD instead, and ``kubernetes`` is already a
dependency.

Status is polled (one GET every ``poll_s``) rather than watched: it survives API-server restarts
and expired watches (410) without bookkeeping, and needs only the ``get`` verb.

Cancel and failure (docs/distributed-training.md): SIGTERM/SIGINT to the step (a cancelled KFP
run, an evicted pod) and the step's own timeout delete the TrainJob (foreground: its pods go
first) before the step exits. A step killed outright (SIGKILL, node lost) leaves the TrainJob
running; its retry re-attaches to it by name, and the job's ``activeDeadlineSeconds``
(``train.distributed.timeout_s``) bounds it if nothing does. A retry that finds the TrainJob
failed deletes it and starts a new one, which resumes from the durable checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicrush.config import AicrushConfig
from components.object_store import download_folder, read_text, write_text

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
#: The replicated job and container of the torch-distributed runtime that runs the trainer.
NODE = "node"
#: Our entry in ``spec.runtimePatches`` (one entry per manager; Kueue may add its own).
PATCH_MANAGER = "aicrush.dev/train-model"
#: Labels tying a TrainJob to its KFP run.
RUN_LABEL = "aicrush.dev/kfp-run-id"
TASK_LABEL = "aicrush.dev/kfp-task"
WORKER_MODULE = "components.train_worker"
#: Uid of the training image's user (docker/train.Dockerfile ``USER 10001:10001``).
IMAGE_UID = 10001


class TrainJobError(RuntimeError):
    """The TrainJob failed, timed out or could not be created; the message says why and what to do.

    ``transient``: an API-server error worth retrying (HTTP 5xx, 429, connection lost).
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def gpus_requested(cfg: AicrushConfig) -> int:
    """GPUs of the whole job: ``num_nodes x processes_per_node x gpus_per_process``."""
    d = cfg.train.distributed
    return d.num_nodes * d.processes_per_node * d.gpus_per_process


def needs_trainjob(cfg: AicrushConfig) -> bool:
    """Whether ``cfg`` trains as a TrainJob in the cluster: more than one GPU in all, or more
    than one node (several machines, GPU or CPU, only a TrainJob can run). One GPU, and one
    node's CPU processes, train in the step's own pod."""
    return gpus_requested(cfg) > 1 or cfg.train.distributed.num_nodes > 1


def uses_trainjob(cfg: AicrushConfig, artifact_uri: str) -> bool:
    """Whether the train step launches a TrainJob: artifacts in ``gs://`` (the cluster) and
    :func:`needs_trainjob`. Every local run trains in the step itself."""
    return artifact_uri.startswith("gs://") and needs_trainjob(cfg)


def trainjob_name(run_id: str, task: str = "train-model") -> str:
    """``aicrush-train-<12 hex>`` from the KFP run and task: the same for every retry of the task,
    different per run. Short (26 characters) because the runtime derives pod host names
    (``<name>-node-0-0``, 63 characters at most) and the master address from it."""
    digest = hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:12]
    return f"aicrush-train-{digest}"


@dataclass(frozen=True)
class TrainJobPaths:
    """Object-storage locations a TrainJob reads and writes (``gs://`` URIs).

    config: the ``AicrushConfig.to_dict()`` JSON the step uploads. features: the
    engineer_features artifact. model: where rank 0 writes the model folder. metrics: rank 0's
    metrics JSON. checkpoints: the durable checkpoint prefix (shared with single-GPU retries).
    """

    config: str
    features: str
    model: str
    metrics: str
    checkpoints: str

    @classmethod
    def for_run(cls, features_uri: str, name: str, checkpoints: str = "") -> TrainJobPaths:
        """Staging under ``<pipeline_root>/<run>/trainjobs/<name>/`` for a features artifact at
        ``<pipeline_root>/<run>/<task>/<artifact>``; checkpoints default to the run's
        ``checkpoints/train_model`` prefix (``components.checkpoint_sync.checkpoint_uri_for``)."""
        from components.checkpoint_sync import checkpoint_uri_for

        run = features_uri.rstrip("/").rsplit("/", 2)[0]
        staging = f"{run}/trainjobs/{name}"
        return cls(
            config=f"{staging}/config.json",
            features=features_uri.rstrip("/"),
            model=f"{staging}/model",
            metrics=f"{staging}/metrics.json",
            checkpoints=checkpoints or checkpoint_uri_for(features_uri),
        )


def worker_args(paths: TrainJobPaths) -> list[str]:
    """torchrun's arguments: the worker module and its CLI (``components.train_worker``)."""
    return [
        "--module",
        WORKER_MODULE,
        "--config",
        paths.config,
        "--features",
        paths.features,
        "--model-output",
        paths.model,
        "--checkpoint-dir",
        paths.checkpoints,
        "--metrics-output",
        paths.metrics,
    ]


def build_trainjob(
    cfg: AicrushConfig,
    *,
    name: str,
    namespace: str,
    paths: TrainJobPaths,
    image: str,
    run_id: str = "",
    task: str = "train-model",
) -> dict[str, Any]:
    """The TrainJob body for ``cfg.train.distributed`` and ``cfg.resources``.

    Each of ``num_nodes`` nodes runs ``processes_per_node`` torchrun workers and requests
    ``processes_per_node x gpus_per_process`` of ``resources.accelerator_type`` plus the CPU and
    memory of ``resources``; GPU nodes get the node selector and toleration of ``resources``
    through ``spec.runtimePatches`` (the CRD's way to patch the runtime's pod template). The pods
    meet the Pod Security "restricted" profile of the namespace (non-root, no privilege
    escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root with a writable
    ``/tmp`` and a memory-backed ``/dev/shm`` for NCCL).
    """
    dist, res = cfg.train.distributed, cfg.resources
    gpus = dist.processes_per_node * dist.gpus_per_process
    limits: dict[str, Any] = {"cpu": res.cpu_limit, "memory": res.memory_limit}
    requests: dict[str, Any] = {"cpu": res.cpu_request, "memory": res.memory_request}
    pod: dict[str, Any] = {
        "serviceAccountName": dist.service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
        "containers": [
            {
                "name": NODE,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
    }
    if gpus > 0:
        limits[res.accelerator_type] = gpus
        requests[res.accelerator_type] = gpus
        pod["nodeSelector"] = {res.node_selector_key: res.node_selector_value}
        # GKE taints GPU nodes with nvidia.com/gpu=present:NoSchedule; only GPU pods may land there.
        pod["tolerations"] = [
            {"key": res.toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        ]
    labels = {
        "app.kubernetes.io/part-of": "aicrush",
        "app.kubernetes.io/component": "trainer",
        TASK_LABEL: task,
    }
    if run_id:
        labels[RUN_LABEL] = run_id[:63]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "runtimeRef": {
                "apiGroup": GROUP,
                "kind": "ClusterTrainingRuntime",
                "name": dist.runtime,
            },
            "activeDeadlineSeconds": int(dist.timeout_s),
            "trainer": {
                "image": image,
                "command": ["torchrun"],
                "args": worker_args(paths),
                "numNodes": dist.num_nodes,
                "numProcPerNode": dist.processes_per_node,
                "resourcesPerNode": {"requests": requests, "limits": limits},
                "env": [
                    {"name": "HOME", "value": "/tmp"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                ],
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": NODE,
                                        "template": {
                                            "metadata": {"labels": labels},
                                            "spec": {
                                                "template": {
                                                    "metadata": {"labels": labels},
                                                    "spec": pod,
                                                }
                                            },
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


# ---------------------------------------------------------------------------------------------
# Status


def conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``status.conditions`` by type."""
    return {c.get("type", ""): c for c in (job.get("status") or {}).get("conditions") or []}


def _true(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    cond = conditions(job).get(kind)
    return cond if cond and cond.get("status") == "True" else None


def describe(job: dict[str, Any]) -> tuple[str, str]:
    """``(state, line)``: one of ``created``, ``suspended``, ``pending``, ``running``,
    ``succeeded``, ``failed``, and a progress line for it (pods from ``status.jobsStatus``)."""
    name = job["metadata"]["name"]
    for kind, state in (("Failed", "failed"), ("Complete", "succeeded")):
        cond = _true(job, kind)
        if cond:
            why = " ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
            return state, f"TrainJob {name} {state}" + (f": {why}" if why else "")
    suspended = _true(job, "Suspended")
    if suspended:
        return "suspended", f"TrainJob {name} suspended: {suspended.get('reason') or ''}".rstrip(
            ": "
        )
    jobs = (job.get("status") or {}).get("jobsStatus") or []
    if jobs:  # one entry per replicated job of the runtime (torch-distributed: "node")
        ready = sum(int(j.get("ready") or 0) for j in jobs)
        active = sum(int(j.get("active") or 0) for j in jobs)
        if ready:
            return "running", f"TrainJob {name}: pods running ({ready} of {len(jobs)} jobs ready)"
        if active:
            return (
                "pending",
                f"TrainJob {name}: pods starting ({active} of {len(jobs)} jobs active)",
            )
    return "created", f"TrainJob {name} created, waiting for its pods"


def _api_error(err: Exception, doing: str) -> TrainJobError:
    status = getattr(err, "status", None)
    message = ""
    body = getattr(err, "body", None)
    if body:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = str(body)[:500]
    hint = {
        403: "the pipeline's service account lacks RBAC on trainjobs.trainer.kubeflow.org "
        "(manifests/base/rbac.yaml; see docs/distributed-training.md)",
        404: "the TrainJob CRD is missing: install Kubeflow Trainer v2 (docs/distributed-training.md)",
        422: "the API server rejected the TrainJob body",
    }.get(status or 0, "")
    return TrainJobError(
        f"{doing} failed: HTTP {status} {getattr(err, 'reason', '') or ''} {message}".strip()
        + (f" ({hint})" if hint else ""),
        transient=status is None or status == 429 or status >= 500,
    )


@dataclass
class TrainJobRunner:
    """Create or re-attach to one TrainJob, follow it to the end, delete it on cancel.

    Args:
        api: ``kubernetes.client.CustomObjectsApi``.
        namespace, name: where the TrainJob lives.
        report: called with one line per state change (``aicrush.progress.report``).
        poll_s: seconds between two status reads.
    """

    api: Any
    namespace: str
    name: str
    report: Callable[[str], None] = print
    poll_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def get(self) -> dict[str, Any] | None:
        """The TrainJob, or None when there is none. Raises TrainJobError (``transient`` for
        5xx, 429 and lost connections)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        doing = f"reading TrainJob {self.namespace}/{self.name}"
        try:
            return self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(err, doing) from err
        except HTTPError as err:
            raise TrainJobError(f"{doing} failed: {err}", transient=True) from err

    def delete(self, wait_s: float = 120.0) -> bool:
        """Delete the TrainJob (foreground: its JobSet and pods go first) and wait until it is
        gone; returns False when there was none. Idempotent."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise _api_error(err, f"deleting TrainJob {self.namespace}/{self.name}") from err
        deadline = self.clock() + wait_s
        while self.get() is not None:
            if self.clock() >= deadline:
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{self.name} is still being deleted after "
                    f"{wait_s:.0f} s; see `kubectl -n {self.namespace} describe trainjob "
                    f"{self.name}` (finalizers), then run the step again",
                    transient=True,
                )
            self.sleep(min(self.poll_s, 2.0))
        return True

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob, or attach to the one a previous attempt of this step created.

        A failed one is replaced (deleted, then created again: the new job resumes from the
        durable checkpoints); a running or finished one is followed as it is.
        """
        from kubernetes.client.exceptions import ApiException

        existing = self.get()
        if existing is not None and _true(existing, "Failed"):
            _, line = describe(existing)
            self.report(f"{line}; a retry replaces it (training resumes from its checkpoints)")
            self.delete()
            existing = None
        if existing is not None:
            self.report(f"TrainJob {self.name} exists (a retried step): following it")
            return existing
        try:
            created = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as err:
            if err.status == 409:  # created meanwhile by a concurrent attempt
                found = self.get()
                if found is not None:
                    return found
            raise _api_error(err, f"creating TrainJob {self.namespace}/{self.name}") from err
        self.report(f"TrainJob {self.name} submitted in namespace {self.namespace}")
        return dict(created)

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Follow the TrainJob until ``Complete`` (returns it) or ``Failed`` (raises), reporting
        each state change once.

        Raises:
            TrainJobError: the job failed (its reason and message), vanished, or is not done
                after ``timeout_s`` (the job is deleted first; raise
                ``train.distributed.timeout_s``).
        """
        deadline = self.clock() + timeout_s
        last = ""
        while True:
            try:
                job = self.get()
            except TrainJobError as err:
                # A restarting API server must not fail a training that runs on; the deadline
                # still bounds the wait.
                if not err.transient or self.clock() >= deadline:
                    raise
                if str(err) != last:
                    self.report(f"{err}; retrying")
                    last = str(err)
                self.sleep(min(self.poll_s, max(0.0, deadline - self.clock())))
                continue
            if job is None:
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{self.name} was deleted while the step waited for "
                    "it; run the pipeline again"
                )
            state, line = describe(job)
            if line != last:
                self.report(line)
                last = line
            if state == "succeeded":
                return job
            if state == "failed":
                cond = _true(job, "Failed") or {}
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{self.name} failed: {cond.get('reason') or 'Failed'}"
                    f": {cond.get('message') or 'no message'}. Its pods' logs: kubectl -n "
                    f"{self.namespace} logs -l jobset.sigs.k8s.io/jobset-name={self.name} "
                    "--tail=200"
                )
            if self.clock() >= deadline:
                self.delete()
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{self.name} was not done after {timeout_s:.0f} s "
                    f"(last state: {state}); it was deleted. Raise train.distributed.timeout_s, "
                    "or check `kubectl -n {ns} describe trainjob {n}` for pods that cannot be "
                    "scheduled (no free GPU nodes)".format(ns=self.namespace, n=self.name)
                )
            self.sleep(min(self.poll_s, max(0.0, deadline - self.clock())))


class Cancelled(BaseException):
    """SIGTERM or SIGINT arrived while the step waited for its TrainJob."""


@contextlib.contextmanager
def delete_on_cancel(runner: TrainJobRunner) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT (KFP cancel, eviction) delete the TrainJob and end the
    step with exit status 143. Only in the main thread (where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: Any) -> None:
        raise Cancelled(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Cancelled as why:
        for s in previous:  # a second signal must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        runner.report(f"{why}: deleting TrainJob {runner.name}")
        runner.delete()
        raise SystemExit(143) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------------------------
# The step


def kube_api() -> Any:
    """``CustomObjectsApi`` from the pod's service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


@dataclass
class TrainJobOutcome:
    """What a finished TrainJob left: its name, the metrics JSON and the model folder."""

    name: str
    metrics: dict[str, float]
    model_dir: Path
    files: int


def run_trainjob(
    cfg: AicrushConfig,
    *,
    features_uri: str,
    model_dir: Path,
    run_id: str,
    checkpoint_dir: str = "",
    api: Any = None,
    namespace: str = "",
    image: str = "",
    report: Callable[[str], None] | None = None,
    poll_s: float = 10.0,
) -> TrainJobOutcome:
    """The distributed body of the ``train_model`` step: upload the config, create (or re-attach
    to) the TrainJob, wait for it, then download its model folder into ``model_dir`` and read
    its metrics.

    Args:
        features_uri: the engineer_features artifact (``gs://``).
        model_dir: the step's ``model`` output folder.
        run_id: the KFP run id (name and labels of the TrainJob).
        checkpoint_dir: a ``gs://`` checkpoint prefix; "" is the run's
            ``checkpoints/train_model`` prefix (a local folder raises ValueError: the job's pods
            cannot see this pod's disk).
        namespace: "" is ``rollout.namespace`` (default ``aicrush``): the project's namespace,
            where its Role allows the pipeline's service account (``aicrush/aicrush-pipeline-runner``
            or standalone KFP's ``kubeflow/pipeline-runner``) to manage TrainJobs and where the
            pods' service account ``train.distributed.service_account`` lives.
    Raises:
        TrainJobError: the TrainJob failed (its reason), timed out, or the API refused it.
        FileNotFoundError: the job succeeded but wrote no model folder.
    """
    from aicrush.progress import report as progress_report

    say = report or (lambda line: progress_report(f"train: {line}"))
    if not image:
        from aicrush.images import default_images

        image = default_images()["train"]
    name = trainjob_name(run_id or features_uri)
    namespace = namespace or cfg.rollout.namespace
    if checkpoint_dir and not checkpoint_dir.startswith("gs://"):
        raise ValueError(
            f"checkpoint_dir {checkpoint_dir!r} is a local folder, which the TrainJob's pods cannot "
            "see; give the train task a gs:// prefix, or leave it empty for the run's "
            "checkpoints/train_model prefix"
        )
    paths = TrainJobPaths.for_run(features_uri, name, checkpoint_dir)
    body = build_trainjob(
        cfg, name=name, namespace=namespace, paths=paths, image=image, run_id=run_id
    )
    d = cfg.train.distributed
    say(
        f"{d.num_nodes} node(s) x {d.processes_per_node} process(es) x {d.gpus_per_process} GPU(s) "
        f"as TrainJob {namespace}/{name} on runtime {d.runtime}"
    )
    write_text(paths.config, json.dumps(cfg.to_dict()))
    runner = TrainJobRunner(api or kube_api(), namespace, name, report=say, poll_s=poll_s)
    with delete_on_cancel(runner):
        runner.submit(body)
        runner.wait(d.timeout_s)
    files = download_folder(paths.model, model_dir)
    # components.train_worker's document: {"metrics": {name: float}, "labels": [...], ...}.
    raw = json.loads(read_text(paths.metrics)).get("metrics") or {}
    metrics = {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    say(f"TrainJob {name}: downloaded {files} model files from {paths.model}")
    return TrainJobOutcome(name, metrics, model_dir, files)


def run_trainjob_step(
    cfg: AicrushConfig,
    features: Any,
    model: Any,
    metrics: Any,
    checkpoint_dir: str = "",
    run_id: str = "",
) -> Any:
    """``train_model``'s body in TrainJob mode: the same outputs as a single-GPU run (the model
    folder in ``model.path``, the worker's metrics logged on ``metrics``, ``model.metadata``).
    Returns a ``components.train_model.TrainResult``."""
    from aicrush.model_folder import MODEL_META_FILE
    from components.train_model import TrainResult

    model_dir = Path(model.path)
    outcome = run_trainjob(
        cfg,
        features_uri=str(features.uri),
        model_dir=model_dir,
        run_id=run_id,
        checkpoint_dir=checkpoint_dir,
    )
    meta_file = model_dir / MODEL_META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"TrainJob {outcome.name} succeeded but its model folder has no {MODEL_META_FILE}; "
            "the worker (components.train_worker) must write a complete model folder"
        )
    labels = list(json.loads(meta_file.read_text()).get("labels") or [])
    for key, value in outcome.metrics.items():
        metrics.log_metric(key, value)
    model.metadata.update(
        {
            "labels": labels,
            "preset": cfg.preset,
            "base_model": cfg.train.base_model,
            "trainjob": outcome.name,
        }
    )
    return TrainResult(model_dir=model_dir, labels=labels, metrics=outcome.metrics)
