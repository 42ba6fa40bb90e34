"""The training pipeline: wiring only. Each step's work lives in ``components/``.

ingest_sources -> validate_dataset -> engineer_features -> train_model -> evaluate_model
(gate against the champion) -> register_model (alias ``challenger``) when the gate passes.
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real annotations.

from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from aicrush.config import AicrushConfig, ResourcesConfig
from components.engineer_features import engineer_features
from components.evaluate_model import evaluate_model
from components.ingest_sources import ingest_sources
from components.register_model import lookup_champion, register_model
from components.train_model import train_model
from components.trainjob import needs_trainjob
from components.validate_dataset import validate_dataset

PIPELINE_NAME = "aicrush-training"


class Outcome(NamedTuple):
    model_name: str
    model_version: str  # "" when the challenger did not pass the gate
    passed: bool
    reason: str
    macro_f1: float


#: Steps in run order (the local runner prints progress by these names).
STEPS = (
    "ingest-sources",
    "validate-dataset",
    "engineer-features",
    "train-model",
    "lookup-champion",
    "evaluate-model",
    "register-model",
)


def request_training_resources(task: dsl.PipelineTask, res: ResourcesConfig) -> dsl.PipelineTask:
    """GPU, node pool and size of the training pod (cluster only; kfp.local ignores them)."""
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if res.accelerator_count > 0:
        task.set_accelerator_type(res.accelerator_type).set_accelerator_limit(res.accelerator_count)
        kubernetes.add_node_selector(
            task, label_key=res.node_selector_key, label_value=res.node_selector_value
        )
        # GKE taints GPU nodes with nvidia.com/gpu=present:NoSchedule; only GPU pods may land there.
        kubernetes.add_toleration(
            task, key=res.toleration_key, operator="Exists", effect="NoSchedule"
        )
    return task


#: The train task's own pod when it only launches and awaits a TrainJob: no GPU, little else
#: (it uploads the config and downloads the finished model folder).
LAUNCHER_CPU = ("500m", "1")
LAUNCHER_MEMORY = ("1G", "2G")


def request_launcher_resources(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Size of the train task's pod when the training runs in a TrainJob (cluster only)."""
    task.set_cpu_request(LAUNCHER_CPU[0]).set_cpu_limit(LAUNCHER_CPU[1])
    task.set_memory_request(LAUNCHER_MEMORY[0]).set_memory_limit(LAUNCHER_MEMORY[1])
    return task


def build_training_pipeline(
    cfg: AicrushConfig, state_dir: str = "/tmp/aicrush"
) -> Callable[..., Any]:
    """The training pipeline for ``cfg``: its values are the defaults of the ``config`` parameter,
    and the training task's cluster resources come from ``cfg.resources`` (fixed at compile time).
    With more than one GPU in ``cfg.train.distributed`` the train task launches a Kubeflow
    Trainer TrainJob (``components.trainjob``) and its own pod gets no GPU."""
    tracking_uri, secret = cfg.registry.tracking_uri, cfg.registry.credentials_secret_name

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Ingest source files, validate them, engineer Feast features, train a "
        "language classifier, evaluate it against the champion and register it in MLflow.",
    )
    def aicrush_training(config: dict = cfg.to_dict(), state_dir: str = state_dir) -> Outcome:
        """Args:
        config: the whole aicrush config (see README, `aicrush run --help`), validated by each step.
        state_dir: local state folder of the steps (embedded MLflow, Feast repo, ingest cache).
        """
        ingest = ingest_sources(config=config, state_dir=state_dir)
        validate = validate_dataset(config=config, raw=ingest.outputs["dataset"])
        features = engineer_features(
            config=config, state_dir=state_dir, clean=validate.outputs["clean"]
        )
        feast = cfg.features
        if (
            feast.online_store == "redis"
            and feast.redis_secret_name
            and ("REDIS_PASSWORD" in feast.redis_connection_string)
        ):  # the connection string's ${REDIS_PASSWORD}, from a Secret, never a parameter
            kubernetes.use_secret_as_env(
                features,
                secret_name=feast.redis_secret_name,
                secret_key_to_env={"password": "REDIS_PASSWORD"},
            )
        train = train_model(
            config=config,
            features=features.outputs["features"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        if needs_trainjob(cfg):  # the GPUs and nodes belong to the TrainJob's pods, not this one
            request_launcher_resources(train)
        else:
            request_training_resources(train, cfg.resources)
        # A retried pod resumes from its mirrored checkpoint, or re-attaches to its TrainJob.
        if cfg.resources.train_retries:
            train.set_retry(num_retries=cfg.resources.train_retries, backoff_duration="30s")
        champion = lookup_champion(config=config, state_dir=state_dir)
        evaluate = evaluate_model(
            config=config,
            model=train.outputs["model"],
            features=features.outputs["features"],
            champion_uri=champion.output,
        )
        # The gate is an input of register_model rather than a dsl.If: kfp.local 2.17 cannot
        # evaluate a condition on a task output (it skips the branch), and one behaviour for local
        # and cluster runs matters more than a skipped node in the dashboard.
        register = register_model(
            config=config,
            state_dir=state_dir,
            run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            gate_passed=evaluate.outputs["passed"],
            gate_reason=evaluate.outputs["reason"],
            model=train.outputs["model"],
            features=features.outputs["features"],
            raw=ingest.outputs["dataset"],
            evaluation=evaluate.outputs["metrics"],
            model_card=evaluate.outputs["model_card"],
        )
        # Inputs outside the pipeline (sources, the registry) change between runs: never cache.
        for task in (ingest, champion, evaluate, register):
            task.set_caching_options(False)
        for task in (champion, evaluate, register):
            if tracking_uri:
                task.set_env_variable("MLFLOW_TRACKING_URI", tracking_uri)
                if secret:  # credentials come from a Secret, never from a pipeline parameter
                    kubernetes.use_secret_as_env(
                        task,
                        secret_name=secret,
                        secret_key_to_env={
                            "username": "MLFLOW_TRACKING_USERNAME",
                            "password": "MLFLOW_TRACKING_PASSWORD",
                        },
                    )
        return Outcome(  # the run's outcome, also shown in the dashboard
            register.outputs["model_name"],
            register.outputs["model_version"],
            evaluate.outputs["passed"],
            evaluate.outputs["reason"],
            evaluate.outputs["macro_f1"],
        )

    return aicrush_training
