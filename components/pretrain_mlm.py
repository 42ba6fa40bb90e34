"""Masked-language-model pretraining of a from-scratch encoder on the training split's own text,
before it is fine-tuned as a classifier (``train.mlm_epochs``; from-scratch encoders only).

Why: a from-scratch classifier learns each training repository's identifiers and house style
and loses on repositories it has not seen. Learning first to fill in masked tokens of the same
files makes it learn the syntax around them. Measured on the default corpus's fixed split
(41 languages, 6,826 / 592 / 1,798 files; docs/results.md, one NVIDIA H200): a ModernBERT of
hidden size 256 x 4 layers went from 0.700 to 0.785-0.798 test macro-F1 with 6 epochs of this
pretraining (the linear baseline: 0.806); the tiny preset's model from 0.608-0.620 to
0.650-0.666 with 4.

The recipe is BERT's masked LM (Devlin et al. 2019, section 3.1: of the chosen tokens 80 %
become [MASK], 10 % a random token, 10 % stay) at ModernBERT's masking rate of 30 % (Warner et
al. 2024, "Smarter, Better, Faster, Longer", section 2.2), with transformers'
``DataCollatorForLanguageModeling`` and ``Trainer``: AdamW, linear warmup over 6 % of the steps
and linear decay. The text is every chunk of ``max_length - 2`` tokens of the first
:data:`MLM_SOURCE_CHARS` characters of each training file (chunks under
:data:`MIN_CHUNK_TOKENS` tokens are dropped), as ``[CLS] chunk [SEP]``. Only the train split is
read: validation and test files never reach the model before they are scored.

The masked-LM model is ``AutoModelForMaskedLM.from_config`` of the classifier's own config
(``ModernBertForMaskedLM`` with ``sparse_prediction``: logits only at masked positions /
``BertForMaskedLM``); afterwards every parameter the two share by
name and shape (the encoder; for ModernBERT also its prediction head's dense layer and norm)
is copied into the classifier, whose classification layer starts fresh.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from aicrush.config import MLM_MIN_CHUNK_TOKENS, MLM_MIN_MAX_LENGTH, TrainConfig
from components.training_data import seed_of

log = logging.getLogger(__name__)

MLM_SOURCE_CHARS = 16_000
MIN_CHUNK_TOKENS = MLM_MIN_CHUNK_TOKENS

# What pretraining leaves in checkpoint_dir/mlm/ for a retry (:func:`keep_pretraining`). A
# sub-folder, so the checkpoint mirror uploads it with the checkpoints (it syncs folders): a
# retry in a fresh pod restores it from the store.
MLM_METRICS_FILE = "mlm_metrics.json"  #: its figures and the config fingerprint
MLM_WEIGHTS_FILE = "pretrained.safetensors"  #: the classifier's weights right after it
MLM_TOKENIZER_DIR = "tokenizer"  #: the tokenizer those weights index


def mlm_chunks(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """``[CLS] ids [SEP]`` rows of at most ``max_length`` token ids, each text cut into
    consecutive chunks of ``max_length - 2`` tokens (of its first MLM_SOURCE_CHARS characters).

    Raises:
        ValueError: ``max_length`` < MLM_MIN_MAX_LENGTH (18), or no text gives a chunk of
            MIN_CHUNK_TOKENS tokens (names the setting to change).
    """
    if max_length < MLM_MIN_MAX_LENGTH:
        raise ValueError(
            f"train.max_length {max_length} is too short for masked-LM pretraining (needs >= "
            f"{MLM_MIN_MAX_LENGTH}); raise it or set train.mlm_epochs to 0"
        )
    width = max_length - 2
    encoded = tokenizer(
        [t[:MLM_SOURCE_CHARS] for t in texts],
        add_special_tokens=False,
        truncation=False,
        padding=False,
        verbose=False,  # longer than max_length on purpose: it is cut into chunks here
    )["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = [
        [cls, *ids[i : i + width], sep]
        for ids in encoded
        for i in range(0, len(ids), width)
        if len(ids[i : i + width]) >= MIN_CHUNK_TOKENS
    ]
    if not rows:
        raise ValueError(
            f"no training file has {MIN_CHUNK_TOKENS} tokens for masked-LM pretraining; set "
            "train.mlm_epochs to 0"
        )
    return rows


def copy_shared_weights(source: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Copy every parameter and buffer of ``source`` whose name and shape ``target`` has too;
    returns their names (sorted).

    Raises:
        ValueError: the two share no encoder weights (different architectures).
    """
    src, dst = source.state_dict(), target.state_dict()
    shared = sorted(k for k, v in src.items() if k in dst and dst[k].shape == v.shape)
    encoder = [k for k in shared if "embeddings" in k]
    if not encoder:
        raise ValueError(
            f"the masked-LM model ({type(source).__name__}) shares no encoder weights with "
            f"{type(target).__name__}"
        )
    with torch.no_grad():
        for key in shared:
            dst[key].copy_(src[key])
    return shared


def pretrain_mlm(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: TrainConfig,
    max_length: int,
    work_dir: Path,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Pretrain ``model``'s encoder with masked LM on ``texts`` for ``cfg.mlm_epochs`` epochs,
    in place (module docstring). ``emit`` gets progress dicts (``phase: "mlm"``, ``step``,
    ``total_steps``, ``epoch``, ``loss``, ``samples_per_second``).

    Returns ``mlm_loss`` (the last logged training loss; cross-entropy in nats per masked
    token), ``mlm_steps``, ``mlm_chunks`` and ``mlm_seconds``.

    Raises:
        ValueError: see :func:`mlm_chunks` and :func:`copy_shared_weights`.
    """
    from transformers import (
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    rows = mlm_chunks(tokenizer, texts, max_length)
    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(len(rows) / (cfg.mlm_batch_size * world_size))
    total = max(1, math.ceil(steps_per_epoch * cfg.mlm_epochs))
    log.info(
        "masked-LM pretraining: %d chunks of <= %d tokens from %d files, %g epochs (%d steps)",
        len(rows), max_length, len(texts), cfg.mlm_epochs, total,
    )  # fmt: skip
    device = "cuda" if cuda else "cpu"
    message = (
        f"train (masked-LM pretraining): {len(rows):,} chunks x {cfg.mlm_epochs:g} epochs = "
        f"{total:,} steps of {cfg.mlm_batch_size} on {device}"
    )
    if not cuda:
        message += " (slow on a CPU: train.mlm_epochs is meant for a GPU, docs/training.md)"
    if emit is not None:
        emit({"phase": "mlm", "message": message})
    set_seed(cfg.seed)
    config = copy.deepcopy(model.config)
    if hasattr(config, "sparse_prediction"):
        # ModernBERT: the vocabulary projection only for the masked tokens (30 % of them), the
        # same loss; the projection is most of a small model's step.
        config.sparse_prediction = True
    mlm = AutoModelForMaskedLM.from_config(config)

    class Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, list[int]]:
            return {"input_ids": rows[i]}

    clock: dict[str, float] = {"t": time.perf_counter(), "step": 0}

    class Progress(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            now = time.perf_counter()
            done = state.global_step - clock["step"]
            sps = done * cfg.mlm_batch_size * world_size / max(now - clock["t"], 1e-9)
            clock.update(t=now, step=state.global_step)
            info = {
                "phase": "mlm", "step": state.global_step, "total_steps": total,
                "epoch": float(state.epoch or 0.0), "loss": float(logs["loss"]),
                "samples_per_second": sps,
            }  # fmt: skip
            log.info("mlm " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in info.items() if k != "phase"))  # fmt: skip
            clock["loss"] = info["loss"]
            if emit is not None:
                emit(info)

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # One line that stays (aicrush run shows the per-step lines above only on a
            # terminal, overwriting each other): at each epoch's end and where max_steps stops.
            if emit is None or not state.is_world_process_zero or "loss" not in clock:
                return
            seconds = max(time.perf_counter() - clock["start"], 1e-9)
            emit({
                "phase": "mlm", "step": state.global_step, "total_steps": total,
                "epoch": float(state.epoch or 0.0), "loss": clock["loss"],
                "samples_per_second": state.global_step * cfg.mlm_batch_size * world_size / seconds,
                "report": True,
            })  # fmt: skip

    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=cfg.mlm_batch_size,
        max_steps=total,
        learning_rate=cfg.mlm_learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=0.06,  # a fraction of the steps
        lr_scheduler_type="linear",
        bf16=cfg.bf16 and cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        ddp_backend="gloo" if world_size > 1 and not cuda else None,
        save_strategy="no",  # minutes long: a restart repeats it (docs/training.md)
        logging_strategy="steps",
        logging_steps=max(1, min(100, total // 20)),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=cfg.seed,
        # The order of the chunks from the seed, not from the RNG each process reseeds below:
        # accelerate's shuffling sampler draws from torch's initial seed without data_seed, and
        # processes with different orders would take overlapping shares (a review measured it).
        data_seed=cfg.seed,
    )
    trainer = Trainer(
        model=mlm,
        args=args,
        train_dataset=Rows(),
        # One masking stream per process: with one seed, DDP's processes would mask the same
        # positions of their (equally shaped) batches.
        data_collator=DataCollatorForLanguageModeling(
            tokenizer,
            mlm_probability=cfg.mlm_probability,
            seed=seed_of(cfg.seed, int(os.environ.get("RANK", "0"))),
        ),
        callbacks=[Progress()],
    )
    trainer.remove_callback(PrinterCallback)
    if world_size > 1:
        # Trainer seeded every process alike; dropout draws from this RNG, so equally shaped
        # batches (most chunks are max_length long) would get the same masks in every process.
        torch.manual_seed(seed_of(cfg.seed, trainer.args.process_index))
    clock["start"] = time.perf_counter()
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    copied = copy_shared_weights(cast(torch.nn.Module, trainer.model), model)
    log.info("masked-LM pretraining done: %d weight tensors into the classifier", len(copied))
    return {
        "mlm_loss": float(losses[-1]) if losses else float("nan"),
        "mlm_steps": float(trainer.state.global_step),
        "mlm_chunks": float(len(rows)),
        "mlm_seconds": time.perf_counter() - started,
    }


def _folder_sha256(folder: Path) -> str:
    """One sha256 over every file under ``folder`` (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def keep_pretraining(
    model: Any, tokenizer: Any, mlm_dir: Path, fingerprint: str, metrics: dict[str, float]
) -> None:
    """Keep what masked-LM pretraining produced in ``mlm_dir`` for a retry: the tokenizer
    (:data:`MLM_TOKENIZER_DIR`), the classifier's weights (:data:`MLM_WEIGHTS_FILE`, written
    whole or not at all, its metadata naming the config ``fingerprint`` and the tokenizer's
    sha256) and the figures (:data:`MLM_METRICS_FILE`). :func:`kept_pretraining` trusts the
    weights only when all of it matches, so a kill or a partial upload at any point costs a
    second pretraining, never a model with another config's or tokenizer's weights."""
    from safetensors.torch import save_model

    mlm_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(mlm_dir / MLM_TOKENIZER_DIR)
    meta = {
        "fingerprint": fingerprint,
        "tokenizer_sha256": _folder_sha256(mlm_dir / MLM_TOKENIZER_DIR),
    }
    weights = mlm_dir / (MLM_WEIGHTS_FILE + ".tmp")  # whole or not at all: write, then rename
    save_model(model, str(weights), metadata=meta)
    weights.replace(mlm_dir / MLM_WEIGHTS_FILE)
    record = mlm_dir / (MLM_METRICS_FILE + ".tmp")
    record.write_text(json.dumps({**metrics, **meta}))
    record.replace(mlm_dir / MLM_METRICS_FILE)


def kept_pretraining(mlm_dir: Path, fingerprint: str) -> bool:
    """Whether ``mlm_dir`` holds weights :func:`keep_pretraining` kept for this ``fingerprint``,
    with the tokenizer they were written with."""
    from safetensors import safe_open

    weights, tokenizer = mlm_dir / MLM_WEIGHTS_FILE, mlm_dir / MLM_TOKENIZER_DIR
    if not weights.is_file() or not tokenizer.is_dir():
        return False
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # cut short, or not safetensors: pretrain again
        log.warning("ignoring unreadable pretrained weights in %s", mlm_dir)
        return False
    return meta.get("fingerprint") == fingerprint and meta.get(
        "tokenizer_sha256"
    ) == _folder_sha256(tokenizer)


def kept_metrics(mlm_dir: Path, fingerprint: str) -> dict[str, float]:
    """The figures (``mlm_*``) of the pretraining kept in ``mlm_dir`` for this ``fingerprint``,
    or {} (none kept, unreadable, or another config's)."""
    try:
        record = json.loads((mlm_dir / MLM_METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return {}
    return {k: float(v) for k, v in record.items() if k.startswith("mlm_")}


def load_kept_pretraining(model: torch.nn.Module, mlm_dir: Path) -> None:
    """Load the weights :func:`keep_pretraining` kept (check :func:`kept_pretraining` first)."""
    from safetensors.torch import load_model

    load_model(model, str(mlm_dir / MLM_WEIGHTS_FILE))
    log.info("starting fine-tuning from the weights pretrained in %s", mlm_dir)
