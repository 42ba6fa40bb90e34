"""One process of a distributed (DDP) training job: the command torchrun starts in every process.

The same command runs locally (``train.distributed.processes_per_node`` > 1: :func:`launch_local`
starts torchrun on this machine) and in each pod of a Kubeflow Trainer ``TrainJob`` (torchrun set
up by the training runtime). It is a contract with the TrainJob the train step submits::

    python -m components.train_worker --config CONFIG_JSON --features FEATURES \\
        --model-output MODEL_OUT --checkpoint-dir CKPT [--metrics-output METRICS_JSON]

- ``CONFIG_JSON``: the JSON of ``AicrushConfig.to_dict()`` (or a YAML config file, as `aicrush run --config` takes), a path or a ``gs://`` URI.
- ``FEATURES``: the engineer_features folder (train/val/test.parquet): a local folder or a
  ``gs://`` prefix (each process downloads it).
- ``MODEL_OUT``: where rank 0 writes the model folder: a local folder, or a ``gs://`` prefix
  (written locally, then uploaded; ``aicrush.json`` last, so a complete upload has it).
- ``CKPT``: the checkpoint folder, or a ``gs://`` prefix: then each node keeps its checkpoints in
  ``$TMPDIR/aicrush-checkpoints/<hash of CKPT>`` (shared by that node's processes), restored from
  the prefix first, and rank 0 uploads each complete checkpoint (``CheckpointMirror``), so a
  restarted job resumes from the newest complete one. With several nodes only rank 0's files
  are durable: a restarted job resumes the weights, optimizer and schedule exactly; the RNG state
  of other nodes' processes (dropout) starts afresh.
- ``METRICS_JSON``: where rank 0 writes ``{"metrics": {name: float}, "labels": [...],
  "resumed_from_step": int, "world_size": int, "history": [point, ...]}`` (local or ``gs://``);
  ``metrics`` are the train step's Metrics (train_loss, val_accuracy, samples_per_second,
  train_seconds, steps, n_train); ``history`` is the training curve (see
  ``aicrush.model_folder.TRAINING_HISTORY_FILE``).

It relies on torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); started without it, it trains as a single process. Progress lines
(``aicrush.progress``) come from rank 0. Exit status 0 on success; 1 with one line
``train_worker: <error>`` on stderr on failure (torchrun then stops the other processes and
exits non-zero).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aicrush.config import (
    PRESETS,
    AicrushConfig,
    ConfigError,
    DistributedConfig,
    TrainConfig,
    build_config,
)
from components.object_store import download_folder, read_text, upload_folder, write_text
from components.train_model import TrainResult, show_training_progress, train

log = logging.getLogger(__name__)

#: The prefix of the one line a failing worker prints on stderr (``launch_local`` reports it).
ERROR_PREFIX = "train_worker: "


def local_checkpoint_dir(uri: str) -> Path:
    """The node-local folder that mirrors the checkpoint prefix ``uri``: the same path for every
    process of this node (they write parts of one checkpoint), stable across restarts."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "aicrush-checkpoints" / digest


def read_config(config: str) -> AicrushConfig:
    """The config at ``config`` (a path or gs:// URI): JSON (what the train step uploads: already
    merged, every key set) or YAML (what a user writes, as for ``aicrush run --config``). Both go
    through :func:`aicrush.config.build_config`, so a file's ``preset`` (default tiny) is layered
    under its keys: a full JSON dump overrides every preset value and reads back unchanged.

    Raises:
        aicrush.config.ConfigError: not a mapping, or the config does not validate.
    """
    import yaml

    data = yaml.safe_load(read_text(config)) or {}  # YAML reads JSON too
    if not isinstance(data, dict):
        raise ConfigError(f"config {config} must hold a mapping at the top level")
    return build_config(data)


def run(
    config: str,
    features: str,
    model_output: str,
    checkpoint_dir: str,
    metrics_output: str = "",
) -> TrainResult:
    """Do what the command line says (see the module docstring); returns this process's result.

    Raises:
        aicrush.errors.ConfigError: the config does not validate.
        FileNotFoundError / ValueError / RuntimeError: from :func:`components.train_model.train`,
            or a ``gs://`` location that does not exist.
    """
    from aicrush.model_folder import MODEL_META_FILE

    cfg = read_config(config)
    rank = int(os.environ.get("RANK", "0"))
    with tempfile.TemporaryDirectory(prefix="aicrush-worker-") as tmp:
        work = Path(tmp)
        features_dir = Path(features)
        if features.startswith("gs://"):
            features_dir = work / "features"
            missing = "--features must name an engineer_features folder"
            download_folder(features, features_dir, missing=missing)
        remote_model = model_output.startswith("gs://")
        out_dir = work / "model" if remote_model else Path(model_output)
        remote_ckpt = checkpoint_dir.startswith("gs://")
        ckpt = local_checkpoint_dir(checkpoint_dir) if remote_ckpt else Path(checkpoint_dir)
        result = train(
            features_dir,
            cfg.train,
            out_dir,
            ckpt,
            progress=show_training_progress,
            preset=cfg.preset,
            checkpoint_store=checkpoint_dir if remote_ckpt else "",
        )
        if rank == 0:
            if remote_model:
                upload_folder(out_dir, model_output, last=MODEL_META_FILE)
            if metrics_output:
                write_text(metrics_output, json.dumps(metrics_document(result), indent=1))
    return result


def metrics_document(result: TrainResult) -> dict[str, Any]:
    """The METRICS_JSON of a run (module docstring); NaN metrics are left out."""
    import math

    return {
        "metrics": {k: float(v) for k, v in result.metrics.items() if not math.isnan(v)},
        "labels": list(result.labels),
        "resumed_from_step": int(result.resumed_from_step),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "history": result.history,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m components.train_worker",
        description="One process of aicrush's distributed training (run it under torchrun).",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="the aicrush config (AicrushConfig.to_dict() JSON, or a YAML config file): a path or gs:// URI",
    )
    parser.add_argument(
        "--features", required=True, help="engineer_features folder or gs:// prefix"
    )
    parser.add_argument(
        "--model-output", required=True, help="model folder (rank 0) or gs:// prefix"
    )
    parser.add_argument(
        "--checkpoint-dir", required=True, help="checkpoint folder or gs:// prefix (durable)"
    )
    parser.add_argument(
        "--metrics-output", default="", help="metrics + curve JSON (rank 0): path or gs:// URI"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        run(args.config, args.features, args.model_output, args.checkpoint_dir, args.metrics_output)
    except Exception as err:  # one line for torchrun's log and the train step's error
        message = " ".join(str(err).split()) or "(no message)"
        print(f"{ERROR_PREFIX}{type(err).__name__}: {message}", file=sys.stderr, flush=True)
        log.debug("worker failed", exc_info=True)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# Local launch


def check_local_distributed(dist: DistributedConfig, cpus: int | None = None) -> None:
    """Refuse a ``train.distributed`` this machine cannot run: several nodes (only a cluster
    TrainJob can), or more processes than cores and CUDA devices (each process needs a core;
    more only thrash: 64 processes on 2 cores made no progress in 5 minutes).

    Raises:
        ValueError: naming the setting and the value to use.
    """
    if dist.num_nodes > 1:
        raise ValueError(
            f"train.distributed.num_nodes is {dist.num_nodes}: several nodes need a cluster "
            "(the train step submits a TrainJob there); locally set num_nodes: 1"
        )
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    n = dist.processes_per_node
    if n > cpus:
        gpus = 0
        if n > 1:  # only then is importing torch worth it
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n > max(cpus, gpus):
            raise ValueError(
                f"train.distributed.processes_per_node is {n} but this machine has {cpus} CPU "
                f"core(s) and {gpus} CUDA device(s): each process needs one; set it to at most "
                f"{max(cpus, gpus)}"
            )


def launch_local(
    features_dir: Path | str,
    cfg: TrainConfig,
    out_dir: Path | str,
    checkpoint: Path | str,
    preset: str = "tiny",
) -> TrainResult:
    """Train with ``cfg.distributed.processes_per_node`` processes on this machine (torchrun).

    Runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m
    components.train_worker ...`` and waits; the workers' output goes to this process's stdout
    and stderr. On CPU each process gets ``cpu_count // N`` threads (``OMP_NUM_THREADS``).

    Raises:
        ValueError: ``num_nodes`` > 1 (several machines need a cluster: a TrainJob).
        RuntimeError: a worker failed; the message is its ``train_worker:`` line.
    """
    dist = cfg.distributed
    check_local_distributed(dist)
    n = dist.processes_per_node
    full = AicrushConfig.model_validate(
        {"preset": preset if preset in PRESETS else "custom", "train": cfg}
    )
    threads = cfg.num_threads or max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="aicrush-ddp-") as tmp:
        config_path, metrics_path = Path(tmp) / "config.json", Path(tmp) / "metrics.json"
        config_path.write_text(json.dumps(full.to_dict()))
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={n}", "-m", "components.train_worker",
            "--config", str(config_path), "--features", str(features_dir),
            "--model-output", str(out_dir), "--checkpoint-dir", str(checkpoint),
            "--metrics-output", str(metrics_path),
        ]  # fmt: skip
        log.info("starting %d training processes: %s", n, " ".join(cmd))
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        causes: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:  # pass through, keeping the workers' one-line errors
            sys.stderr.write(line)
            if line.startswith(ERROR_PREFIX):
                causes.append(line[len(ERROR_PREFIX) :].strip())
        rc = proc.wait()
        if rc != 0:
            cause = causes[0] if causes else "see the log above"
            raise RuntimeError(f"distributed training ({n} processes) failed (exit {rc}): {cause}")
        doc = json.loads(metrics_path.read_text())
    return TrainResult(
        model_dir=Path(out_dir),
        labels=list(doc["labels"]),
        metrics={k: float(v) for k, v in doc["metrics"].items()},
        resumed_from_step=int(doc["resumed_from_step"]),
        history=list(doc["history"]),
    )


if __name__ == "__main__":
    sys.exit(main())
