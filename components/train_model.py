"""The ``train_model`` step: fine-tune a Hugging Face sequence classifier on the source text.

Model inputs are the text only. The Feast file features (``FEATURE_NAMES``) are used for data
validation, drift monitoring and the drift reference sample, not as model inputs: the serving
path then needs nothing but the request text and the model folder (no feature lookup on the
hot path, no training/serving skew in a second input), and a pretrained encoder such as
all-MiniLM-L6-v2 can be fine-tuned as it is. The statistics the features summarise (line
lengths, indentation, braces, comment markers) are visible to the encoder in the tokens anyway.

The model and tokenizer it starts from: ``components/model_builder.py`` (per ``train.base_model``).

The training loop is our own and lean (AdamW, linear warmup/decay, gradient clipping,
length-bucketed batches with dynamic padding, bf16 autocast on CUDA); ``benchmarks/
bench_training.py`` measures it against ``transformers.Trainer``. Checkpoints (safetensors
weights + optimizer/scheduler/RNG/step state) are written every ``checkpoint_every_steps`` to
``checkpoint_dir``; a retried step with the same ``checkpoint_dir`` resumes from the latest one
and ends with the same weights as an uninterrupted run.
"""

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aicrush.config import TrainConfig
from aicrush.text_window import (
    CROPS,
    DEFAULT_WINDOW,
    crop_source,
    mean_by_text,
    model_inputs,
    random_crop,
    window_texts,
)
from components.model_builder import build_model_and_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TEXT_COLUMN = "text"
LABEL_COLUMN = "language"
_CHECKPOINT_PREFIX = "step-"
_STATE_FILE = "training_state.pt"
_WEIGHTS_FILE = "model.safetensors"
_VAL_LIMIT = 2000  # val rows scored per epoch (enough for a progress signal, bounded cost)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What ``train`` produced: the model folder, its labels and run metrics."""

    model_dir: Path
    labels: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0


# ---------------------------------------------------------------------------------------------
# Data


def load_splits(
    features_dir: Path, splits: Sequence[str] = ("train", "val")
) -> dict[str, pd.DataFrame]:
    """Read the named splits of an ``engineer_features`` folder, checking the text/label columns."""
    features_dir = Path(features_dir)
    out: dict[str, pd.DataFrame] = {}
    for split in splits:
        path = features_dir / f"{split}.parquet"
        if not path.is_file():
            present = (
                sorted(p.name for p in features_dir.glob("*.parquet"))
                if features_dir.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"{split}.parquet is missing from {features_dir} (found: {', '.join(present) or 'nothing'}); "
                "point features_dir at the output of engineer_features"
            )
        frame = pd.read_parquet(path)
        missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path} lacks column(s) {', '.join(missing)}; engineer_features writes them"
            )
        out[split] = frame.reset_index(drop=True)
    if "train" in out and out["train"].empty:
        raise ValueError(f"{features_dir}/train.parquet has no rows; nothing to train on")
    return out


def _labels_of(train: pd.DataFrame) -> list[str]:
    labels = sorted(str(x) for x in train[LABEL_COLUMN].unique())
    if len(labels) < 2:
        raise ValueError(
            f"the training split has {len(labels)} language(s) ({labels}); a classifier needs at least 2"
        )
    return labels


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> torch.Tensor:
    """Per-class loss weights: ``balanced`` is ``n / (n_classes x count)`` (scikit-learn's
    definition; a class absent from ``y`` gets 0), ``none`` is all ones."""
    if mode == "none":
        return torch.ones(n_classes, dtype=torch.float32)
    if mode != "balanced":
        raise ValueError(f"unknown class_weighting {mode!r}; expected 'none' or 'balanced'")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = len(y) / (int(present.sum()) * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def tokenize(
    tokenizer: Any, texts: Sequence[str], max_length: int, window: str = DEFAULT_WINDOW
) -> list[list[int]]:
    """Token ids per text: the text window the model reads (``aicrush.text_window``), truncated
    to ``max_length`` (no padding: batches pad dynamically)."""
    # Characters beyond ~16 per token can never survive truncation; cutting them first saves time.
    limit = max_length * 16
    enc = tokenizer(
        [t[:limit] for t in window_texts(texts, max_length, window)],
        truncation=True,
        max_length=max_length,
        padding=False,
    )
    return list(enc["input_ids"])


# ---------------------------------------------------------------------------------------------
# Batching


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, chunk_batches: int = 50
) -> list[np.ndarray]:
    """Length-bucketed batches of one epoch, deterministic in (seed, epoch).

    Shuffle all rows, sort by length within chunks of ``chunk_batches`` batches (similar lengths
    share a batch, so little padding), cut into batches and shuffle the batch order.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    lens = np.asarray(lengths)
    chunk = batch_size * chunk_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(-lens[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def collate(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch: (input_ids, attention_mask)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict[str, Any]:
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``checkpoint_dir`` (None if there is none)."""
    if not checkpoint_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoint_dir.glob(_CHECKPOINT_PREFIX + "*")
        if (p / _STATE_FILE).is_file() and p.suffix != ".tmp"
    ]
    return max(done, key=lambda p: int(p.name[len(_CHECKPOINT_PREFIX) :]), default=None)


def _save_checkpoint(
    checkpoint_dir: Path,
    step: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int = 2,
) -> None:
    from safetensors.torch import save_model

    final = checkpoint_dir / f"{_CHECKPOINT_PREFIX}{step:08d}"
    tmp = final.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / _WEIGHTS_FILE))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        **extra,
    }
    torch.save(state, tmp / _STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # atomic: a crash mid-save never leaves a half checkpoint as "latest"
    older = sorted(
        p
        for p in checkpoint_dir.glob(_CHECKPOINT_PREFIX + "*")
        if p != final and p.suffix != ".tmp"
    )
    for stale in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)


def _fingerprint(cfg: TrainConfig, labels: list[str], n_train: int) -> str:
    """What must match for a checkpoint to be resumable (data order and model shape)."""
    relevant = cfg.model_dump(exclude={"checkpoint_every_steps", "num_threads"})
    blob = json.dumps({"cfg": relevant, "labels": labels, "n_train": n_train}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Training


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(cfg: TrainConfig) -> tuple[torch.device, Any]:
    """(device, autocast context factory): CUDA with bf16 autocast when present, else CPU."""
    if torch.cuda.is_available():
        if cfg.bf16 and torch.cuda.is_bf16_supported():
            return torch.device("cuda"), lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.device("cuda"), nullcontext
    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    return torch.device("cpu"), nullcontext


def build_optimizer(model: Any, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and LayerNorm) with a linear warmup then linear decay to 0."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (
            no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay
        ).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused AdamW (one kernel for all parameters) runs on CUDA and, since torch 2.4, on CPU.
    try:
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    warmup = math.ceil(total_steps * cfg.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.inference_mode()
def accuracy(
    model: Any,
    ids: list[list[int]],
    y: np.ndarray,
    pad_id: int,
    device: torch.device,
    autocast: Any,
    batch_size: int = 64,
    owner: Sequence[int] | None = None,
) -> float:
    """Accuracy of ``model`` on pre-tokenized rows (sorted by length for little padding).

    ``owner`` (row -> text index, from ``aicrush.text_window.model_inputs``): rows of one text
    are averaged (probabilities) before the argmax; ``y`` then has one label per text.
    """
    if not ids:
        return float("nan")
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    probs = np.empty((len(ids), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id)
        with autocast():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    model.train(was_training)
    if owner is not None:
        probs = mean_by_text(probs, owner, len(y))
    return float((probs.argmax(-1) == y).mean())


def train(
    features_dir: Path,
    cfg: TrainConfig,
    out_dir: Path,
    checkpoint_dir: Path,
    progress: Progress | None = None,
    preset: str = "",
) -> TrainResult:
    """Train a text classifier on ``features_dir/train.parquet`` and write the model folder.

    ``out_dir`` receives ``save_pretrained`` weights (safetensors), the tokenizer and
    ``aicrush.json``. ``checkpoint_dir`` holds resumable checkpoints: when it already has one
    from the same config and data, training resumes there. ``progress`` receives dicts with
    ``step``, ``total_steps``, ``epoch``, ``loss``, ``samples_per_second``, ``lr`` (and
    ``val_accuracy`` at epoch ends); lines are logged too.
    """
    from safetensors.torch import load_model

    features_dir, out_dir, checkpoint_dir = Path(features_dir), Path(out_dir), Path(checkpoint_dir)
    started = time.perf_counter()
    splits = load_splits(features_dir, ("train", "val"))
    train_df, val_df = splits["train"], splits["val"]
    labels = _labels_of(train_df)
    label2id = {name: i for i, name in enumerate(labels)}
    unseen = sorted(set(val_df[LABEL_COLUMN].astype(str)) - set(labels))
    if unseen:
        log.warning("val split has languages not in train (scored as wrong): %s", ", ".join(unseen))

    seed_everything(cfg.seed)
    device, autocast = pick_device(cfg)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(cfg, labels, len(train_df))
    resume = latest_checkpoint(checkpoint_dir)
    resume_state: dict[str, Any] | None = None
    if resume is not None:
        resume_state = torch.load(resume / _STATE_FILE, map_location="cpu", weights_only=True)
        if resume_state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint {resume} was written by a different train config or dataset; "
                f"use a new checkpoint_dir or empty {checkpoint_dir} to start over"
            )

    train_texts = train_df[TEXT_COLUMN].astype(str).tolist()
    tokenizer_dir = checkpoint_dir / "tokenizer"
    tokenizer = None
    if resume is not None and not cfg.base_model and (tokenizer_dir / "tokenizer.json").is_file():
        # A resumed run reuses the tokenizer it trained: the checkpoint's weights index its vocabulary.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with tempfile.TemporaryDirectory(prefix="aicrush-train-") as work:
        model, tokenizer, max_length = build_model_and_tokenizer(
            cfg, labels, train_texts, Path(work), tokenizer
        )
    if not cfg.base_model and resume is None:
        tokenizer.save_pretrained(tokenizer_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    crops = cfg.text_window == CROPS
    if crops:
        # Whole spans, untruncated: each epoch crops one window per file at a random place.
        full_ids = tokenizer(
            [crop_source(t, max_length) for t in train_texts], truncation=False, padding=False
        )["input_ids"]
        train_ids = [list(x) for x in full_ids]
        lengths = [min(len(x), max_length) for x in train_ids]
    else:
        train_ids = tokenize(tokenizer, train_texts, max_length, cfg.text_window)
        lengths = [len(x) for x in train_ids]
    train_y = np.array([label2id[str(x)] for x in train_df[LABEL_COLUMN]], dtype=np.int64)
    val_df = val_df.iloc[:_VAL_LIMIT]
    val_ids, val_owner = model_inputs(
        tokenizer, val_df[TEXT_COLUMN].astype(str).tolist(), max_length, cfg.text_window, cfg.crops
    )
    val_y = np.array([label2id.get(str(x), -1) for x in val_df[LABEL_COLUMN]], dtype=np.int64)
    class_weight = class_weights(train_y, len(labels), cfg.class_weighting).to(device)

    batches_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    total_steps = max(1, math.ceil(batches_per_epoch * cfg.epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    model.to(device).train()
    optimizer, scheduler = build_optimizer(model, cfg, total_steps)
    step = 0
    if resume_state is not None and resume is not None:
        load_model(model, str(resume / _WEIGHTS_FILE), device=str(device))
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        _set_rng_state(resume_state["rng"])
        step = int(resume_state["step"])
        log.info("resuming from %s (step %d of %d)", resume, step, total_steps)
    resumed_from = step

    def emit(info: dict[str, Any]) -> None:
        log.info(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
            )
        )
        if progress is not None:
            progress(info)

    log_every = max(1, min(50, total_steps // 20))
    loop_seconds, samples_done, window_loss, window_n = 0.0, 0, 0.0, 0
    val_accuracy, last_loss = float("nan"), float("nan")
    extra = {"fingerprint": fingerprint}
    t_window, samples_window = time.perf_counter(), 0
    epoch_cache: dict[int, list[np.ndarray]] = {}
    epoch_rows: list[list[int]] = train_ids
    while step < total_steps:
        epoch, pos = divmod(step, batches_per_epoch)
        if epoch not in epoch_cache:
            epoch_cache = {epoch: epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)}
            if crops:  # deterministic in (seed, epoch), so a resumed run sees the same windows
                rng = np.random.default_rng([cfg.seed, epoch, 1])
                epoch_rows = [random_crop(ids, max_length, rng) for ids in train_ids]
        idx = epoch_cache[epoch][pos]
        t0 = time.perf_counter()
        input_ids, mask = collate([epoch_rows[i] for i in idx], pad_id)
        target = torch.from_numpy(train_y[idx])
        input_ids, mask, target = (
            input_ids.to(device, non_blocking=True),
            mask.to(device, non_blocking=True),
            target.to(device, non_blocking=True),
        )
        with autocast():
            logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), target, weight=class_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_loss += float(loss.detach())  # also syncs the device, so timings are real
        window_n += 1
        loop_seconds += time.perf_counter() - t0
        samples_done += len(idx)
        samples_window += len(idx)

        end_of_epoch = step % batches_per_epoch == 0 or step == total_steps
        if step % log_every == 0 or end_of_epoch:
            now = time.perf_counter()
            info: dict[str, Any] = {
                "step": step,
                "total_steps": total_steps,
                "epoch": round(step / batches_per_epoch, 3),
                "loss": window_loss / window_n,
                "lr": float(scheduler.get_last_lr()[0]),
                "samples_per_second": samples_window / max(now - t_window, 1e-9),
            }
            if end_of_epoch:
                val_accuracy = accuracy(
                    model, val_ids, val_y, pad_id, device, autocast, owner=val_owner
                )
                info["val_accuracy"] = val_accuracy
            emit(info)
            last_loss = info["loss"]
            window_loss, window_n, samples_window, t_window = 0.0, 0, 0, time.perf_counter()
        if step % cfg.checkpoint_every_steps == 0 or step == total_steps:
            _save_checkpoint(checkpoint_dir, step, model, optimizer, scheduler, extra)

    model.eval().to("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out_dir)
    train_seconds = time.perf_counter() - started
    metrics = {
        "train_loss": float(last_loss),
        "val_accuracy": float(val_accuracy),
        "steps": float(step),
        "n_train": float(len(train_ids)),
        "train_seconds": train_seconds,
        "samples_per_second": samples_done / loop_seconds if loop_seconds else float("nan"),
    }
    meta = {
        "labels": labels,
        "max_length": max_length,
        "text_window": cfg.text_window,
        "crops": cfg.crops if crops else 1,
        "preset": preset
        or ("tiny" if not cfg.base_model else "minilm" if cfg.base_model == "minilm" else "custom"),
        "base_model": cfg.base_model,
        "seed": cfg.seed,
        "n_train": len(train_ids),
        "n_val": len(val_y),
        "steps": step,
        "resumed_from_step": resumed_from,
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(metrics["samples_per_second"], 3) if samples_done else None,
        "val_accuracy": None if math.isnan(val_accuracy) else round(val_accuracy, 4),
        "device": str(device),
        "train_config": cfg.model_dump(),
    }
    from aicrush.model_folder import MODEL_META_FILE

    (out_dir / MODEL_META_FILE).write_text(json.dumps(meta, indent=2))
    return TrainResult(
        model_dir=out_dir, labels=labels, metrics=metrics, resumed_from_step=resumed_from
    )


# ---------------------------------------------------------------------------------------------
# KFP glue


def default_checkpoint_dir(model_path: str) -> Path:
    """``<dirname(model.path)>/../checkpoints/train_model``: stable across retries of one run.

    The model artifact lives at ``<pipeline_root>/<run>/<task>/model``; the run's folder is the
    same for every attempt of the task, so a retried task finds the checkpoints of the failed one.
    """
    return Path(model_path).parent.parent / "checkpoints" / "train_model"


def show_training_progress(info: dict[str, Any]) -> None:
    """``aicrush run``'s view of training: one line per epoch (with validation accuracy), a
    transient line for the steps in between (see :mod:`aicrush.progress`)."""
    from aicrush.progress import report, status

    line = (
        f"train: epoch {info['epoch']:.2f}, step {info['step']}/{info['total_steps']}, "
        f"loss {info['loss']:.4f}, {info['samples_per_second']:.0f} samples/s"
    )
    if "val_accuracy" in info:
        report(f"{line}, val accuracy {info['val_accuracy']:.3f}")
    else:
        status(line)


def run_train_step(
    config: dict[str, Any],
    features: Any,
    model: Any,
    metrics: Any,
    checkpoint_dir: str = "",
    run_id: str = "",
) -> TrainResult:
    """The body of the ``train_model`` component: validate config, train, log metrics.

    In the cluster with more than one GPU in ``train.distributed`` the step launches a Kubeflow
    Trainer TrainJob instead and waits for it (``components.trainjob``); ``run_id`` names it.
    """
    import contextlib

    from aicrush.config import config_from_dict
    from components.checkpoint_sync import CheckpointMirror, checkpoint_uri_for
    from components.trainjob import run_trainjob_step, uses_trainjob

    cfg = config_from_dict(config)
    if uses_trainjob(cfg, getattr(features, "uri", "")):
        return run_trainjob_step(cfg, features, model, metrics, checkpoint_dir, run_id)
    # A URL (gs://...) is mirrored from a local folder; in the cluster the default is a prefix in
    # the pipeline's artifact store, since a pod's own disk dies with it (see checkpoint_sync).
    remote = checkpoint_dir if "://" in checkpoint_dir else ""
    remote = remote or ("" if checkpoint_dir else checkpoint_uri_for(getattr(features, "uri", "")))
    local = checkpoint_dir if checkpoint_dir and not remote else ""
    ckpt = Path(local) if local else default_checkpoint_dir(model.path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    mirror = CheckpointMirror(remote, ckpt) if remote else contextlib.nullcontext()
    with mirror:
        result = train(
            Path(features.path),
            cfg.train,
            Path(model.path),
            ckpt,
            preset=cfg.preset,
            progress=show_training_progress,
        )
    for key, value in result.metrics.items():
        if not math.isnan(value):
            metrics.log_metric(key, float(value))
    model.metadata.update(
        {"labels": result.labels, "preset": cfg.preset, "base_model": cfg.train.base_model}
    )
    return result


from kfp.dsl import Dataset, Input, Metrics, Model, Output  # noqa: E402

from components import train_component  # noqa: E402


@train_component
def train_model(
    config: dict,
    features: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    checkpoint_dir: str = "",
    run_id: str = "",
) -> None:
    """Train the code-language classifier on the text of the engineered splits.

    config: the whole aicrush config (``AicrushConfig.to_dict()``); its ``train`` section is used.
    features: the engineer_features folder (train/val/test.parquet).
    model: the model folder (save_pretrained safetensors + tokenizer + aicrush.json).
    metrics: train loss, val accuracy, samples/s, train seconds.
    checkpoint_dir: where resumable checkpoints go: a folder, or a gs:// prefix mirrored from a
    local folder. "" means ``<pipeline_root>/<run>/checkpoints/train_model`` when the artifacts
    live in object storage (the cluster), else ``<dirname(model.path)>/../checkpoints/train_model``;
    both stable across retries of this run, so a retried task resumes.
    run_id: the KFP run id; names the Kubeflow Trainer TrainJob the step launches in the cluster
    when ``train.distributed`` asks for more than one GPU (docs/distributed-training.md).
    """
    from components.train_model import run_train_step

    run_train_step(config, features, model, metrics, checkpoint_dir, run_id)
