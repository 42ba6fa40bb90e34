"""The ``train_model`` step: fine-tune a Hugging Face sequence classifier on the source text.

Model inputs are the text only. The Feast file features (``FEATURE_NAMES``) are used for data
validation, drift monitoring and the drift reference sample, not as model inputs: the serving
path then needs nothing but the request text and the model folder (no feature lookup on the
hot path, no training/serving skew in a second input), and a pretrained encoder such as
all-MiniLM-L6-v2 can be fine-tuned as it is. The statistics the features summarise (line
lengths, indentation, braces, comment markers) are visible to the encoder in the tokens anyway.

The model and tokenizer it starts from: ``components/model_builder.py`` (per ``train.base_model``).

**Training is ``transformers.Trainer``** (with ``accelerate``): AdamW without decay on biases and
LayerNorm, linear warmup (``train.warmup_ratio``) and decay, gradient clipping at 1.0, gradient
accumulation (``train.gradient_accumulation_steps``), bf16 autocast on CUDA (``train.bf16``),
dynamic padding (``PadToLongest``), per-epoch validation, checkpoints every
``train.checkpoint_every_steps`` with ``save_total_limit``, ``resume_from_checkpoint``, and PyTorch
DDP when started under torchrun. What is ours, each only where Trainer has no equivalent (the
data parts in ``components/training_data.py``, the checkpoint and callback parts in
``components/training_callbacks.py``):

- :class:`~components.training_data.EpochDataset`: each epoch's order is transformers' own length grouping
  (``get_length_grouped_indices``) with a generator seeded by (seed, epoch), read sequentially,
  and the ``crops`` window draws each file's window from (seed, epoch, row). Trainer's
  ``group_by_length`` sampler draws its order from the global RNG at each epoch's start, so a
  run resumed in a later epoch would see another order than the run it continues.
- :func:`~components.training_data.weighted_loss` (``compute_loss_func``): Trainer has no class-weighted loss.
- :class:`~components.training_data.PadToLongest` (``data_collator``): ``DataCollatorWithPadding`` pads through
  ``tokenizer.pad`` at ~2 ms a batch, 4 % of a tiny-preset step on 2 cores; torch's
  ``pad_sequence`` does the same in ~0.3 ms.
- ``aicrush_checkpoint.json`` in each checkpoint folder, written by the first process after every
  process has saved its part (``on_save``): Trainer's ``get_last_checkpoint`` takes any
  ``checkpoint-N`` folder, even one a kill cut short, and other processes' RNG files can land after
  ``trainer_state.json``. It also holds the fingerprint that refuses a checkpoint of another config.
- the progress lines and the measured optimizer-loop samples/s (a ``TrainerCallback``), the
  validation accuracy averaged per text over its windows (``compute_metrics``), and restoring the
  RNG after validation (Trainer's evaluation loader draws from the global RNG, which would shift
  the dropout stream of a run resumed from a checkpoint saved at an epoch's end).

A retried step with the same ``checkpoint_dir`` resumes from the newest complete checkpoint and
ends with the same weights as an uninterrupted run (on CPU; ``tests/components/test_train_model``).

**Distributed.** With ``train.distributed.processes_per_node`` > 1, :func:`train` runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m components.train_worker ...``
(gloo on CPU, NCCL on CUDA; see :mod:`components.train_worker`) and every process calls
:func:`train` again under torchrun; Trainer does DDP from torchrun's environment. On CPU each
process gets ``cpu_count // processes_per_node`` torch threads (1 each for 2 processes on a
2-core machine: more threads than cores only contend). The first process (rank 0) alone writes
the model folder, the checkpoints' markers and the metrics.

**CPU memory.** On CPU, :func:`train` first asks glibc's allocator (``mallopt``) to keep freed
memory for reuse (mmap and trim thresholds of 1 GiB): by default the gradients, freed by
``zero_grad`` after every step, went back to the operating system and were page-faulted in
again by the next backward pass, which cost Trainer about 15 % of its CPU throughput on the tiny preset
(``benchmarks/bench_training.py``; the hand-written loop it replaced had escaped it by its order
of allocations). The process keeps its peak memory instead, as PyTorch's caching allocator does
on CUDA. PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason;
``LD_PRELOAD`` of either still works (``mallopt`` is then a no-op).

**MLflow.** The training curve (Trainer's log history: loss, learning rate, gradient norm per
logging step, validation accuracy per epoch; a resumed run keeps the history of the run it
continues) goes into the model folder as ``training_history.json``; ``register_model`` logs it,
step by step, into the MLflow run it registers the model with. Training pods (a KFP pod or a
TrainJob's) then need no MLflow access, and the curve sits in the same run as the version.
"""

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aicrush.config import TrainConfig
from aicrush.errors import CredentialsError
from aicrush.text_window import CROPS, crop_source, model_inputs
from components.checkpoint_sync import CheckpointMirror
from components.model_builder import build_model_and_tokenizer
from components.pretrain_mlm import (
    MLM_TOKENIZER_DIR,
    keep_pretraining,
    kept_metrics,
    kept_pretraining,
    load_kept_pretraining,
    pretrain_mlm,
)
from components.training_callbacks import (
    barrier,
    config_fingerprint,
    drop_incomplete,
    latest_checkpoint,
    marker_of,
    step_of,
    trainer_callbacks,
    training_curve,
)
from components.training_data import (
    LABEL_COLUMN,
    TEXT_COLUMN,
    EpochDataset,
    PadToLongest,
    class_weights,
    data_sha256,
    labels_of,
    load_splits,
    seed_of,
    text_accuracy,
    tokenize,
    weighted_loss,
)

log = logging.getLogger(__name__)

_VAL_LIMIT = 2000  # val rows scored per epoch (enough for a progress signal, bounded cost)
_EVAL_BATCH = 64

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What ``train`` produced: the model folder, its labels, run metrics and the curve."""

    model_dir: Path
    labels: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# CPU memory


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Make glibc's malloc keep freed blocks for reuse: allocations below ``mmap_threshold``
    bytes come from the heap, and the heap is returned to the OS only above ``trim_threshold``
    bytes free at its top (both at most 2**31 - 1: C ints; ``mallopt(3)``: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD; setting either
    also turns off glibc's dynamic threshold). Training frees and reallocates the same gradient
    buffers every step; returned to the OS, they are page-faulted in again each time (module
    docstring, "CPU memory"). Returns False where it does not apply: the user chose the
    allocator's settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, glibc.malloc
    in ``GLIBC_TUNABLES``, or a malloc preloaded with ``LD_PRELOAD``: jemalloc, tcmalloc, ...), not glibc, or mallopt refused a
    value; never raises."""
    import ctypes
    import ctypes.util

    chosen = [
        name
        for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        if os.environ.get(name)
    ]
    chosen += ["GLIBC_TUNABLES"] if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") else []
    chosen += ["LD_PRELOAD"] if "malloc" in os.environ.get("LD_PRELOAD", "") else []
    if chosen:
        log.debug("allocator left as configured (%s)", ", ".join(chosen))
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
    log.debug("mallopt: mmap threshold %d, trim threshold %d: %s", mmap_threshold,
              trim_threshold, "set" if ok else "refused")  # fmt: skip
    return ok


# ---------------------------------------------------------------------------------------------
# Training


def _under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _default_preset(cfg: TrainConfig, preset: str) -> str:
    if preset:
        return preset
    return "tiny" if not cfg.base_model else "minilm" if cfg.base_model == "minilm" else "custom"


def train(
    features_dir: Path,
    cfg: TrainConfig,
    out_dir: Path,
    checkpoint_dir: Path,
    progress: Progress | None = None,
    preset: str = "",
    checkpoint_store: str = "",
) -> TrainResult:
    """Train a text classifier on ``features_dir/train.parquet`` and write the model folder.

    ``out_dir`` receives ``save_pretrained`` weights (safetensors), the tokenizer,
    ``aicrush.json`` and ``training_history.json`` (the curve). ``checkpoint_dir`` holds Trainer's
    checkpoints (``checkpoint-<step>/``, the newest ``train.save_total_limit`` kept): when it
    already has a complete one from the same config and data, training resumes there.
    ``checkpoint_store`` (a ``gs://`` prefix or a folder; "" for none) mirrors ``checkpoint_dir``
    (:class:`components.checkpoint_sync.CheckpointMirror`): restored first, each checkpoint
    uploaded as soon as it is complete. ``progress`` receives dicts with ``step``,
    ``total_steps``, ``epoch``, ``loss``, ``lr``, ``samples_per_second`` (and ``val_accuracy``
    at epoch ends); lines are logged too.

    With ``cfg.distributed.world_size`` > 1 outside torchrun this launches torchrun
    (:func:`components.train_worker.launch_local`); ``progress`` is then not called (the first
    process prints the progress lines itself).

    Raises:
        FileNotFoundError / ValueError: a missing split, one class only, a checkpoint of another
            config or dataset in ``checkpoint_dir`` (names the folder to empty).
        RuntimeError: a distributed run failed (the first failing process's error).
    """
    if cfg.distributed.world_size > 1 and not _under_torchrun():
        from components.train_worker import launch_local

        return launch_local(
            features_dir, cfg, out_dir, checkpoint_store or checkpoint_dir,
            preset=_default_preset(cfg, preset),
        )  # fmt: skip

    from transformers import (
        AutoTokenizer,
        PrinterCallback,
        Trainer,
        TrainerState,
        TrainingArguments,
        set_seed,
    )

    features_dir, out_dir, checkpoint_dir = Path(features_dir), Path(out_dir), Path(checkpoint_dir)
    started = time.perf_counter()
    if not torch.cuda.is_available():
        retain_freed_memory()
    splits = load_splits(features_dir, ("train", "val"))
    train_df, val_df = splits["train"], splits["val"]
    labels = labels_of(train_df)
    label2id = {name: i for i, name in enumerate(labels)}
    unseen = sorted(set(val_df[LABEL_COLUMN].astype(str)) - set(labels))
    if unseen:
        log.warning("val split has languages not in train (scored as wrong): %s", ", ".join(unseen))

    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))

    n_train = len(train_df)
    ga = cfg.gradient_accumulation_steps
    batches_per_process = math.ceil(n_train / (cfg.batch_size * world_size))
    updates_per_epoch = max(1, math.ceil(batches_per_process / ga))
    total_steps = max(1, math.ceil(updates_per_epoch * cfg.epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    val_df = val_df.iloc[:_VAL_LIMIT]
    has_eval = not val_df.empty
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=_EVAL_BATCH,
        gradient_accumulation_steps=ga,
        max_steps=total_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1): a fraction of the steps
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        bf16=cfg.bf16 and cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        ddp_backend="gloo" if world_size > 1 and not cuda else None,
        # The from-scratch BERT uses every parameter; a hub model might not (DDP must then look).
        ddp_find_unused_parameters=None if cfg.base_model else False,
        train_sampling_strategy="sequential",  # EpochDataset orders the epoch (see its docstring)
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="steps",
        save_steps=cfg.checkpoint_every_steps,
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=max(1, min(50, total_steps // 20)),
        report_to="none",  # the curve goes to MLflow through register_model (module docstring)
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        seed=cfg.seed,
    )  # sets up torch.distributed under torchrun
    if not cuda:
        # Processes on one machine share its cores: more threads than cores only contend.
        torch.set_num_threads(cfg.num_threads or max(1, (os.cpu_count() or 1) // local_world))
    local_main = args.local_process_index == 0
    mirror = CheckpointMirror(checkpoint_store, checkpoint_dir) if checkpoint_store else None

    fingerprint = config_fingerprint(cfg, labels, n_train, data_sha256(train_df))
    with args.main_process_first(local=True, desc="restore checkpoints"):
        if local_main:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            if mirror is not None:
                mirror.restore()
            drop_incomplete(checkpoint_dir)
        resume = latest_checkpoint(checkpoint_dir)
    resumed_from = 0
    if resume is not None:
        marker = marker_of(resume) or {}
        if marker.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint {resume} was written by a different train config or dataset; "
                f"use a new checkpoint_dir or empty {checkpoint_dir} to start over"
            )
        resumed_from = int(marker.get("step", step_of(resume)))
        log.info("resuming from %s (step %d of %d)", resume, resumed_from, total_steps)

    train_texts = train_df[TEXT_COLUMN].astype(str).tolist()
    tokenizer_dir = checkpoint_dir / "tokenizer"
    mlm_dir = checkpoint_dir / "mlm"
    # Pretrained by an earlier attempt that was killed before its first fine-tuning checkpoint:
    # start fine-tuning from those weights and their tokenizer instead of pretraining again.
    pretrained = (
        bool(cfg.mlm_epochs) and resume is None and not cfg.base_model
        and kept_pretraining(mlm_dir, fingerprint)
    )  # fmt: skip
    set_seed(cfg.seed)  # the model's initial weights
    with args.main_process_first(local=True, desc="tokenizer"):
        tokenizer = None
        if pretrained:
            tokenizer = AutoTokenizer.from_pretrained(mlm_dir / MLM_TOKENIZER_DIR)
        elif not cfg.base_model and (resume is not None or not local_main):
            # A resumed run reuses the tokenizer it trained (the checkpoint's weights index its
            # vocabulary); other processes on this node take the one the first process saved.
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        with tempfile.TemporaryDirectory(prefix="aicrush-train-") as work:
            model, tokenizer, max_length = build_model_and_tokenizer(
                cfg, labels, train_texts, Path(work), tokenizer
            )
        if not cfg.base_model and resume is None and local_main:
            tokenizer.save_pretrained(tokenizer_dir)
    _check_same_tokenizer(tokenizer)
    finished = resume is not None and resumed_from >= total_steps
    if finished and resume is not None:
        # Its final checkpoint is complete: nothing is left to train (Trainer, resumed there,
        # would train one step past max_steps). Its weights are validated and written.
        model = type(model).from_pretrained(resume)

    mlm_metrics: dict[str, float] = {}
    pretrain_seconds = 0.0  # this attempt's, kept out of train_seconds
    if cfg.mlm_epochs and resume is None and not pretrained:
        # A resumed run's checkpoint already holds the pretrained-then-fine-tuned weights.
        pretrain_started = time.perf_counter()
        mlm_metrics = pretrain_mlm(
            model, tokenizer, train_texts, cfg, max_length, mlm_dir,
            emit=progress if local_main else None,
        )  # fmt: skip
        if local_main:
            keep_pretraining(model, tokenizer, mlm_dir, fingerprint, mlm_metrics)
        if mirror is not None and args.process_index == 0:
            try:  # a retry in a fresh pod then starts from these weights
                mirror.push()
            except CredentialsError:  # no later push could send them either: stop, say why
                raise
            except Exception as err:  # the next checkpoint's push sends them; training goes on
                log.warning("uploading the pretrained weights to %s failed: %s", mirror.uri, err)
        pretrain_seconds = time.perf_counter() - pretrain_started
    elif cfg.mlm_epochs:
        mlm_metrics = kept_metrics(
            mlm_dir, fingerprint
        )  # what the attempt that pretrained measured
        if pretrained:
            load_kept_pretraining(model, mlm_dir)

    crops = cfg.text_window == CROPS
    if crops:
        # Whole spans, untruncated: each epoch crops one window per file at a random place.
        train_ids = tokenizer(
            [crop_source(t, max_length) for t in train_texts],
            truncation=False,
            padding=False,
            verbose=False,  # spans longer than max_length on purpose: no "indexing errors" warning
        )["input_ids"]
    else:
        train_ids = tokenize(tokenizer, train_texts, max_length, cfg.text_window)
    train_y = np.array([label2id[str(x)] for x in train_df[LABEL_COLUMN]], dtype=np.int64)
    train_dataset = EpochDataset(
        train_ids, train_y, max_length=max_length, seed=cfg.seed,
        group_size=cfg.batch_size * ga * world_size, crop=crops,
    )  # fmt: skip
    val_ids, val_owner = model_inputs(
        tokenizer, val_df[TEXT_COLUMN].astype(str).tolist(), max_length, cfg.text_window, cfg.crops
    )
    val_y = np.array([label2id.get(str(x), -1) for x in val_df[LABEL_COLUMN]], dtype=np.int64)
    by_length = np.argsort([len(x) for x in val_ids], kind="stable")  # little padding per batch
    eval_owner = [val_owner[i] for i in by_length]
    # Trainer computes metrics only for rows with labels; -100 (a language train lacks) is
    # ignored by the loss. The accuracy itself is per text (compute_metrics).
    eval_rows = [
        {
            "input_ids": val_ids[i],
            "labels": int(val_y[val_owner[i]]) if val_y[val_owner[i]] >= 0 else -100,
        }
        for i in by_length
    ]

    def compute_metrics(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if len(logits) != len(eval_owner):
            raise RuntimeError(f"{len(logits)} predictions for {len(eval_owner)} validation rows")
        return {"accuracy": text_accuracy(logits, eval_owner, val_y)}

    def emit(info: dict[str, Any]) -> None:
        log.info(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()
            )
        )
        if progress is not None:
            progress(info)

    samples = {"n": 0}
    loss_of = weighted_loss(class_weights(train_y, len(labels), cfg.class_weighting))

    def counted_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> Any:
        if torch.is_grad_enabled():  # training, not validation
            samples["n"] += int(labels.shape[0])
        return loss_of(outputs, labels, num_items_in_batch)

    callbacks = trainer_callbacks(
        emit=emit, samples=samples, world_size=args.world_size, has_eval=has_eval,
        checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, mirror=mirror,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_rows if has_eval else None,
        data_collator=PadToLongest(tokenizer.pad_token_id or 0),
        # No processing_class: Trainer would copy the tokenizer into every checkpoint; it is
        # saved once, in checkpoint_dir/tokenizer.
        compute_loss_func=counted_loss,
        compute_metrics=compute_metrics if has_eval else None,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; ProgressLines does it
    if args.world_size > 1:
        # Trainer seeds every process alike, so each would draw the same dropout masks for its
        # (equally shaped) batch: correlated noise that measurably slowed learning. One stream each.
        torch.manual_seed(seed_of(cfg.seed, args.process_index))
    if finished and resume is not None:
        trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    history = list(trainer.state.log_history)
    evaluated = [e for e in history if "eval_accuracy" in e]
    if has_eval and (not evaluated or evaluated[-1].get("step") != trainer.state.global_step):
        trainer.evaluate()  # a resumed run that had nothing left to train still reports accuracy
        history = list(trainer.state.log_history)
    losses = [e["loss"] for e in history if "loss" in e]
    evaluated = [e for e in history if "eval_accuracy" in e]
    val_accuracy = float(evaluated[-1]["eval_accuracy"]) if evaluated else float("nan")
    progress_cb = callbacks[0]
    loop_seconds, loop_samples = progress_cb.loop_seconds, progress_cb.loop_samples

    metrics = {
        "train_loss": float(losses[-1]) if losses else float("nan"),
        "val_accuracy": val_accuracy,
        "steps": float(trainer.state.global_step),
        "n_train": float(n_train),
        "train_seconds": time.perf_counter() - started - pretrain_seconds,
        "samples_per_second": loop_samples / loop_seconds if loop_seconds else float("nan"),
        **mlm_metrics,
    }
    curve = training_curve(history)
    if trainer.is_world_process_zero():
        _write_model_folder(
            out_dir, trainer.model, tokenizer, max_length, cfg, labels, metrics, curve,
            meta={
                "preset": _default_preset(cfg, preset),
                "n_train": n_train,
                "n_val": len(val_y),
                "steps": trainer.state.global_step,
                "resumed_from_step": resumed_from,
                "device": str(args.device),
                "world_size": args.world_size,
            },
        )  # fmt: skip
    if mirror is not None and trainer.is_world_process_zero():
        mirror.push()  # what a failed upload during training left behind; raises if it fails again
    barrier()  # no process leaves before the model folder is complete
    return TrainResult(
        model_dir=out_dir,
        labels=labels,
        metrics=metrics,
        resumed_from_step=resumed_from,
        history=curve,
    )


def _check_same_tokenizer(tokenizer: Any) -> None:
    """Every process must index the same vocabulary (each node trains or loads its own)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    digest = hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
    digests: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise RuntimeError(
            "the training processes built different tokenizers; empty the checkpoint folders "
            "(their tokenizer/ folders differ) and start again"
        )


def _write_model_folder(
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    max_length: int,
    cfg: TrainConfig,
    labels: list[str],
    metrics: dict[str, float],
    curve: list[dict[str, float]],
    meta: dict[str, Any],
) -> None:
    """save_pretrained weights + tokenizer + aicrush.json + training_history.json.

    Ours, not ``Trainer.save_model``: that also pickles the TrainingArguments into the folder,
    which the served model does not need."""
    from aicrush.model_folder import MODEL_META_FILE, TRAINING_HISTORY_FILE

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out_dir)
    sps, val = metrics["samples_per_second"], metrics["val_accuracy"]
    full = {
        "labels": labels,
        "max_length": max_length,
        "text_window": cfg.text_window,
        "crops": cfg.crops if cfg.text_window == CROPS else 1,
        "base_model": cfg.base_model,
        "seed": cfg.seed,
        **meta,
        "train_seconds": round(metrics["train_seconds"], 3),
        "samples_per_second": round(sps, 3) if math.isfinite(sps) else None,
        "val_accuracy": round(val, 4) if math.isfinite(val) else None,
        **{k: round(v, 4) for k, v in metrics.items() if k.startswith("mlm_") and math.isfinite(v)},
        "train_config": cfg.model_dump(),
    }
    (out_dir / MODEL_META_FILE).write_text(json.dumps(full, indent=2))
    (out_dir / TRAINING_HISTORY_FILE).write_text(json.dumps(curve, indent=1))


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

    if "message" in info:  # a phase's start
        report(str(info["message"]))
        return
    sps = info.get("samples_per_second", float("nan"))
    phase = "train (masked-LM pretraining)" if info.get("phase") == "mlm" else "train"
    line = (
        f"{phase}: epoch {info['epoch']:.2f}, step {info['step']}/{info['total_steps']}, "
        f"loss {info['loss']:.4f}, "
        # nan: a retry resumed at its last checkpoint and trained no step of its own
        + (f"{sps:.0f} samples/s" if math.isfinite(sps) else "resumed, no steps left")
    )
    if "val_accuracy" in info:
        report(f"{line}, val accuracy {info['val_accuracy']:.3f}")
    elif info.get("report"):  # masked-LM pretraining's epoch ends: no validation to show
        report(line)
    else:
        status(line)


def _check_artifact_store(cfg: Any, artifact_uri: str, checkpoint_dir: str) -> None:
    """In a cluster whose pipeline root is not GCS (MinIO, S3): refuse a distributed config,
    whose request holds no GPU for this pod, and say that a retry starts from step 0.

    Raises:
        DataError: ``train.distributed`` needs a TrainJob and the artifacts are not in ``gs://``.
    """
    from aicrush.errors import DataError
    from components.trainjob import needs_trainjob

    scheme = artifact_uri.partition("://")[0] if "://" in artifact_uri else ""
    if not scheme or scheme == "gs":
        return
    if needs_trainjob(cfg):
        raise DataError(
            f"train.distributed asks for a Kubeflow Trainer TrainJob, whose nodes exchange the "
            f"run's files through GCS, but this run's artifacts are in {scheme}:// "
            f"({artifact_uri}); submit with `aicrush submit --pipeline-root gs://BUCKET/PREFIX` "
            "or set train.distributed to one GPU on one node (docs/distributed-training.md)"
        )
    if not checkpoint_dir:
        log.warning(
            "the run's artifacts are in %s://, which checkpoints are not mirrored to: a retried "
            "pod trains from step 0; submit with --pipeline-root gs://BUCKET/PREFIX to resume",
            scheme,
        )


def run_train_step(
    config: dict[str, Any],
    features: Any,
    model: Any,
    metrics: Any,
    checkpoint_dir: str = "",
    run_id: str = "",
) -> TrainResult:
    """The body of the ``train_model`` component: validate config, train, log metrics.

    In the cluster with more than one GPU or node in ``train.distributed`` the step launches a Kubeflow
    Trainer TrainJob instead and waits for it (``components.trainjob``); ``run_id`` names it.
    """

    from aicrush.config import config_from_dict
    from components.checkpoint_sync import checkpoint_uri_for
    from components.trainjob import run_trainjob_step, uses_trainjob

    cfg = config_from_dict(config)
    artifact_uri = str(getattr(features, "uri", ""))
    if uses_trainjob(cfg, artifact_uri):
        return run_trainjob_step(cfg, features, model, metrics, checkpoint_dir, run_id)
    _check_artifact_store(cfg, artifact_uri, checkpoint_dir)
    # A URL (gs://...) is mirrored from a local folder; in the cluster the default is a prefix in
    # the pipeline's artifact store, since a pod's own disk dies with it (see checkpoint_sync).
    remote = checkpoint_dir if "://" in checkpoint_dir else ""
    remote = remote or ("" if checkpoint_dir else checkpoint_uri_for(getattr(features, "uri", "")))
    local = checkpoint_dir if checkpoint_dir and not remote else ""
    ckpt = Path(local) if local else default_checkpoint_dir(model.path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = train(
        Path(features.path),
        cfg.train,
        Path(model.path),
        ckpt,
        preset=cfg.preset,
        progress=show_training_progress,
        checkpoint_store=remote,
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
    metrics: train loss, val accuracy, samples/s, train seconds, steps, training rows (the
    curve per step is in the model folder's training_history.json; register_model logs it to MLflow).
    checkpoint_dir: where resumable checkpoints go: a folder, or a gs:// prefix mirrored from a
    local folder. "" means ``<pipeline_root>/<run>/checkpoints/train_model`` when the artifacts
    live in object storage (the cluster), else ``<dirname(model.path)>/../checkpoints/train_model``;
    both stable across retries of this run, so a retried task resumes.
    run_id: the KFP run id; names the Kubeflow Trainer TrainJob the step launches in the cluster
    when ``train.distributed`` asks for more than one GPU or node (docs/distributed-training.md).
    """
    from components.train_model import run_train_step

    run_train_step(config, features, model, metrics, checkpoint_dir, run_id)
