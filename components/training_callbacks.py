"""Checkpoints and Trainer callbacks of ``components.train_model.train``.

A checkpoint counts once its ``aicrush_checkpoint.json`` marker is written, by the first process
after every process has saved its part (:func:`trainer_callbacks`' ``CompleteCheckpoints``):
Trainer's ``get_last_checkpoint`` takes any ``checkpoint-N`` folder, even one a kill cut short.
The marker also holds the config's fingerprint (:func:`config_fingerprint`), which refuses a
checkpoint of another config. The progress lines, the optimizer loop's samples/s and the RNG
kept across validation are callbacks too; transformers is imported inside
:func:`trainer_callbacks`, so importing this module stays light.
"""

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from aicrush.config import TrainConfig
from aicrush.errors import CredentialsError
from components.checkpoint_sync import CHECKPOINT_PREFIX, COMPLETE_MARKER

log = logging.getLogger(__name__)


def marker_of(folder: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((folder / COMPLETE_MARKER).read_text()))
    except (OSError, ValueError):
        return None


def step_of(folder: Path) -> int:
    try:
        return int(folder.name[len(CHECKPOINT_PREFIX) :])
    except ValueError:
        return -1


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The complete checkpoint (``checkpoint-<step>/`` with its marker) with the highest step in
    ``checkpoint_dir``; None if there is none."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoint_dir.glob(CHECKPOINT_PREFIX + "*")
        if p.is_dir() and step_of(p) >= 0 and marker_of(p) is not None
    ]
    return max(done, key=step_of, default=None)


def drop_incomplete(checkpoint_dir: Path) -> None:
    """Remove checkpoint folders a kill cut short: Trainer would count them when pruning."""
    import shutil

    for folder in Path(checkpoint_dir).glob(CHECKPOINT_PREFIX + "*"):
        if folder.is_dir() and marker_of(folder) is None:
            log.info("removing incomplete checkpoint %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def config_fingerprint(
    cfg: TrainConfig, labels: list[str], n_train: int, data_sha256: str = ""
) -> str:
    """What must match for a checkpoint (or kept pretraining) to be resumable: the config (data
    order, model shape, schedule), the labels, and the training data (``n_train`` files whose
    texts and labels hash to ``data_sha256``, :func:`components.training_data.data_sha256`)."""
    relevant = cfg.model_dump(
        exclude={
            "checkpoint_every_steps": True,
            "num_threads": True,
            "save_total_limit": True,
            "distributed": {"runtime"},
        }
    )
    blob = json.dumps(
        {"cfg": relevant, "labels": labels, "n_train": n_train, "data": data_sha256},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trainer_callbacks(**kwargs: Any) -> list[Any]:
    """The TrainerCallbacks of one run: progress, complete checkpoints, RNG kept across eval."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):  # type: ignore[misc]
        """Progress lines (``emit``) and the optimizer loop's samples/s.

        The loop time is each step's data loading, forward, backward and optimizer step: from
        the last callback of the previous step (its log, evaluation or save) to ``on_step_end``.
        Samples are counted by the loss function (this process) times the number of processes.
        """

        def __init__(self, emit: Callable[[dict[str, Any]], None], samples: dict[str, int],
                     world_size: int, has_eval: bool):  # fmt: skip
            self.emit, self.samples, self.world, self.has_eval = emit, samples, world_size, has_eval
            self.t_ready = time.perf_counter()
            self.loop_seconds, self.window_seconds = 0.0, 0.0
            self.loop_samples, self.window_samples, self.counted = 0, 0, 0
            self.last: dict[str, Any] = {}
            self.pending: dict[str, Any] | None = None
            self.epoch_end = False

        def _ready(self, *_: Any, **__: Any) -> None:
            self.t_ready = time.perf_counter()

        on_train_begin = on_epoch_begin = on_evaluate = on_save = _ready

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            now = time.perf_counter()
            seconds = now - self.t_ready
            samples = (self.samples["n"] - self.counted) * self.world
            self.counted = self.samples["n"]
            self.loop_seconds += seconds
            self.window_seconds += seconds
            self.loop_samples += samples
            self.window_samples += samples
            self.t_ready = now

        def on_epoch_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            control.should_log = True  # one line per epoch: the loss beside its val accuracy
            self.epoch_end = self.has_eval

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            logs = logs or {}
            if state.is_world_process_zero and "loss" in logs:
                sps = self.window_samples / self.window_seconds if self.window_seconds else 0.0
                self.window_seconds, self.window_samples = 0.0, 0
                self.last = {
                    "step": state.global_step,
                    "total_steps": state.max_steps,
                    "epoch": round(float(state.epoch or 0.0), 3),
                    "loss": float(logs["loss"]),
                    "lr": float(logs.get("learning_rate", float("nan"))),
                    "samples_per_second": sps,
                }
                if self.epoch_end:
                    self.pending = dict(self.last)
                else:
                    self.emit(dict(self.last))
            if state.is_world_process_zero and "eval_accuracy" in logs:
                if not self.last:  # nothing trained in this process: the checkpoint's last loss
                    logged = [e for e in state.log_history if "loss" in e] or [{}]
                    self.last = {
                        "loss": float(logged[-1].get("loss", float("nan"))),
                        "lr": float(logged[-1].get("learning_rate", float("nan"))),
                        "samples_per_second": float("nan"),
                    }
                info = self.pending or {
                    **self.last,
                    "step": state.global_step,
                    "epoch": round(float(state.epoch or 0.0), 3),
                }
                info.setdefault("total_steps", state.max_steps)
                info["val_accuracy"] = float(logs["eval_accuracy"])
                self.pending, self.epoch_end = None, False
                self.emit(info)
            self.t_ready = time.perf_counter()

    class CompleteCheckpoints(TrainerCallback):  # type: ignore[misc]
        """After each save: wait for every process, write the marker, upload (first process)."""

        def __init__(self, checkpoint_dir: Path, fingerprint: str, mirror: Any):
            self.dir, self.fingerprint, self.mirror = checkpoint_dir, fingerprint, mirror

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            barrier()  # every process has written its part (its RNG state) of the checkpoint
            if not state.is_world_process_zero:
                return
            folder = self.dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
            marker = {
                "fingerprint": self.fingerprint,
                "step": state.global_step,
                "world_size": args.world_size,
            }
            tmp = folder / (COMPLETE_MARKER + ".tmp")
            tmp.write_text(json.dumps(marker))
            tmp.replace(folder / COMPLETE_MARKER)  # atomic: a marker is whole or absent
            if self.mirror is not None:
                try:
                    self.mirror.push()
                except CredentialsError:  # no later save could upload either: stop, say why
                    raise
                except Exception as err:  # the next save uploads it again; training goes on
                    log.warning("uploading checkpoints to %s failed: %s", self.mirror.uri, err)

    class KeepTrainingRng(TrainerCallback):  # type: ignore[misc]
        """Validation leaves the RNG as it found it (the dropout stream of training)."""

        def __init__(self) -> None:
            self.saved: torch.Tensor | None = None

        def on_epoch_end(self, *_: Any, **__: Any) -> None:
            self.saved = torch.get_rng_state()

        def on_evaluate(self, *_: Any, **__: Any) -> None:
            if self.saved is not None:
                torch.set_rng_state(self.saved)
                self.saved = None

    return [
        ProgressLines(kwargs["emit"], kwargs["samples"], kwargs["world_size"], kwargs["has_eval"]),
        CompleteCheckpoints(kwargs["checkpoint_dir"], kwargs["fingerprint"], kwargs["mirror"]),
        KeepTrainingRng(),
    ]


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def training_curve(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Trainer's ``state.log_history`` as the curve MLflow gets: one point per logging step
    (``train_loss``, ``learning_rate``, ``grad_norm``) and per epoch (``val_accuracy``), each
    with its optimizer ``step`` and ``epoch``."""
    points: list[dict[str, float]] = []
    for entry in log_history:
        point: dict[str, float] = {
            "step": int(entry.get("step", 0)),
            "epoch": float(entry.get("epoch") or 0.0),
        }
        if "loss" in entry:
            point["train_loss"] = float(entry["loss"])
            for key in ("learning_rate", "grad_norm"):
                if entry.get(key) is not None:
                    point[key] = float(entry[key])
        elif "eval_accuracy" in entry:
            point["val_accuracy"] = float(entry["eval_accuracy"])
        else:
            continue  # eval runtime, the final summary: not a curve
        if all(math.isfinite(v) for v in point.values()):
            points.append(point)
    return points
