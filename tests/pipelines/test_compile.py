"""The compiled KFP IR: GPU placement of the training task, parameters, images, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aicrush.config import build_config
from aicrush.images import default_images
from pipelines.compile import compile_training_pipeline


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    path = compile_training_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    return _load(path)


def _executor_of(spec: dict, task: str) -> dict:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    executor = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][executor]


def test_pipeline_has_every_step(compiled: list[dict]):
    tasks = compiled[0]["root"]["dag"]["tasks"]
    assert set(tasks) >= {
        "ingest-sources",
        "validate-dataset",
        "engineer-features",
        "train-model",
        "lookup-champion",
        "evaluate-model",
        "register-model",
    }
    assert compiled[0]["pipelineInfo"]["name"] == "aicrush-training"


def test_train_task_requests_one_l4_gpu(compiled: list[dict]):
    spec, platform = compiled
    resources = _executor_of(spec, "train-model")["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert resources["resourceCpuRequest"] == "4" and resources["resourceMemoryLimit"] == "32G"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train_exec = spec["root"]["dag"]["tasks"]["train-model"]["componentRef"]["name"].replace(
        "comp-", "exec-"
    )
    assert k8s[train_exec]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"
    }
    assert k8s[train_exec]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_only_the_train_task_gets_a_gpu(compiled: list[dict]):
    spec, _ = compiled
    for task in spec["root"]["dag"]["tasks"]:
        if task != "train-model":
            assert "accelerator" not in _executor_of(spec, task)["container"].get("resources", {})


def test_resources_are_configurable(tmp_path: Path):
    cfg = build_config(
        {"resources": {"node_selector_value": "nvidia-tesla-a100", "accelerator_count": 2}}
    )
    spec, platform = _load(compile_training_pipeline(tmp_path / "p.yaml", cfg))
    assert (
        _executor_of(spec, "train-model")["container"]["resources"]["accelerator"]["resourceCount"]
        == "2"
    )
    labels = next(
        iter(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values())
    )["nodeSelector"]
    assert labels["labels"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-a100"


def test_cpu_only_cluster_drops_gpu_placement(tmp_path: Path):
    spec, *_ = _load(
        compile_training_pipeline(
            tmp_path / "p.yaml", build_config({"resources": {"accelerator_count": 0}})
        )
    )
    assert "accelerator" not in _executor_of(spec, "train-model")["container"]["resources"]


def test_images_come_from_the_kustomization(compiled: list[dict]):
    spec, _ = compiled
    images = default_images()
    assert _executor_of(spec, "train-model")["container"]["image"] == images["train"]
    for task in ("ingest-sources", "validate-dataset", "register-model"):
        assert _executor_of(spec, task)["container"]["image"] == images["pipeline"]


def test_config_parameter_defaults_to_the_config(compiled: list[dict]):
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["config"]["parameterType"] == "STRUCT"
    assert params["config"]["defaultValue"]["preset"] == "tiny"
    assert "state_dir" in params


def test_components_install_nothing_at_run_time(compiled: list[dict]):
    spec, _ = compiled
    for executor in spec["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"].get("command", []))
        assert "pip install" not in command, "dependencies belong in the image"


def test_mlflow_steps_get_server_and_credentials_from_a_secret(tmp_path: Path):
    cfg = build_config({"registry": {"tracking_uri": "http://mlflow.example:5000"}})
    spec, platform = _load(compile_training_pipeline(tmp_path / "p.yaml", cfg))
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in ("lookup-champion", "evaluate-model", "register-model"):
        env = {e["name"]: e["value"] for e in _executor_of(spec, task)["container"]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
        executor = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"].replace(
            "comp-", "exec-"
        )
        secret = k8s[executor]["secretAsEnv"][0]
        assert secret["secretName"] == "aicrush-mlflow-client"
        assert {m["envVar"] for m in secret["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }


@pytest.mark.parametrize("gpus_per_process", [1, 0])
def test_multi_node_training_compiles_to_a_launcher_task_without_gpu(
    tmp_path: Path, gpus_per_process: int
):
    # 2 nodes x 4 processes x 1 GPU: the GPUs belong to the TrainJob's pods (components/trainjob.py);
    # the train task's own pod only launches and awaits it. On CPU too: one pod is not two nodes.
    distributed = {"num_nodes": 2, "processes_per_node": 4, "gpus_per_process": gpus_per_process}
    cfg = build_config({"train": {"distributed": distributed}})
    spec, *platform = _load(compile_training_pipeline(tmp_path / "p.yaml", cfg))
    resources = _executor_of(spec, "train-model")["container"]["resources"]
    assert "accelerator" not in resources
    assert resources["resourceCpuLimit"] == "1" and resources["resourceMemoryLimit"] == "2G"
    executors = (
        platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if platform else {}
    )
    train_exec = spec["root"]["dag"]["tasks"]["train-model"]["componentRef"]["name"].replace(
        "comp-", "exec-"
    )
    assert "nodeSelector" not in executors.get(train_exec, {})
    assert "tolerations" not in executors.get(train_exec, {})
    task = spec["root"]["dag"]["tasks"]["train-model"]
    # The run id names the TrainJob, so a retried task (kept: maxRetryCount) finds the same one.
    assert task["inputs"]["parameters"]["run_id"] == {
        "runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}
    }
    assert task["retryPolicy"]["maxRetryCount"] == cfg.resources.train_retries


def test_single_gpu_training_still_trains_in_its_own_pod(compiled: list[dict]):
    spec, _ = compiled
    assert "run_id" in spec["root"]["dag"]["tasks"]["train-model"]["inputs"]["parameters"]
    resources = _executor_of(spec, "train-model")["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "1"


@pytest.mark.parametrize(
    ("connection", "mounted"),
    [("aicrush-redis:6379,password=${REDIS_PASSWORD}", True), ("aicrush-redis:6379", False)],
)
def test_feast_step_gets_the_redis_password_from_a_secret(
    tmp_path: Path, connection: str, mounted: bool
):
    """The cluster's Redis requires a password (manifests/base/redis.yaml): the connection
    string's ${REDIS_PASSWORD} comes from the Secret, mounted only when it is referred to (a
    missing Secret would keep the pod from starting)."""
    cfg = build_config(
        {"features": {"online_store": "redis", "redis_connection_string": connection}}
    )
    spec, *platform = _load(compile_training_pipeline(tmp_path / "p.yaml", cfg))
    executors = (
        platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if platform else {}
    )
    executor = spec["root"]["dag"]["tasks"]["engineer-features"]["componentRef"]["name"].replace(
        "comp-", "exec-"
    )
    secrets = executors.get(executor, {}).get("secretAsEnv", [])
    if mounted:
        assert secrets[0]["secretName"] == "aicrush-redis"
        assert secrets[0]["keyToEnv"] == [{"secretKey": "password", "envVar": "REDIS_PASSWORD"}]
    else:
        assert secrets == []
