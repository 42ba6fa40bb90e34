"""Load a trained aicrush model folder and classify texts. Used by evaluation, serving and monitoring.

A model folder (the ``Model`` artifact of ``train_model``) holds a Hugging Face
``save_pretrained`` model (safetensors) with ``id2label`` set, its tokenizer, and ``aicrush.json``
(labels, max_length, preset, feature names). An MLflow pyfunc folder that wraps one
(``artifacts/model/``) and the folder KServe mounts (``/mnt/models``) are accepted too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aicrush.text_window import crops_of, mean_by_text, model_inputs, window_of

if TYPE_CHECKING:
    import torch

MODEL_META_FILE = "aicrush.json"
#: The training curve (``components.train_model``): a JSON list of points, each with ``step``,
#: ``epoch`` and some of ``train_loss``, ``learning_rate``, ``grad_norm``, ``val_accuracy``.
TRAINING_HISTORY_FILE = "training_history.json"


def recorded_version(meta: dict) -> str | None:
    """The model version an aicrush.json records (``version``, else ``model_version``), if any;
    a folder trained here records none: the registry gives versions."""
    found = meta.get("version") or meta.get("model_version")
    return str(found) if found else None


def resolve_model_dir(path: str | Path) -> Path:
    """Find the aicrush model folder in ``path`` (itself, an MLflow pyfunc wrapper, or one level down)."""
    root = Path(path)
    candidates = [root, root / "artifacts" / "model", root / "model"]
    candidates += sorted(p.parent for p in root.glob("*/" + MODEL_META_FILE))
    candidates += sorted(p.parent for p in root.glob("*/*/" + MODEL_META_FILE))
    for candidate in candidates:
        if (candidate / MODEL_META_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no aicrush model in {root}: expected {MODEL_META_FILE} beside a save_pretrained model "
        "(the Model artifact of train_model, or an MLflow model registered by register_model)"
    )


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """transformers' progress bars off inside (its "Loading weights" bar of a model folder that
    loads in milliseconds), back as they were after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


class TextClassifier:
    """A sequence classifier with its tokenizer and labels, ready for batched inference."""

    def __init__(self, model: Any, tokenizer: Any, meta: dict[str, Any], device: str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.labels: list[str] = list(meta["labels"])
        self.max_length: int = int(meta.get("max_length", 256))
        self.text_window: str = window_of(meta)
        self.crops: int = crops_of(meta)

    @classmethod
    def from_dir(cls, path: str | Path, device: str | None = None) -> TextClassifier:
        # torch and transformers load here, not at import: the ONNX serving path reads model
        # folders with this module and never imports torch (serving/onnx_backend.py).
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = resolve_model_dir(path)
        meta = json.loads((model_dir / MODEL_META_FILE).read_text())
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        with no_progress_bar():
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, use_safetensors=True
            )
        return cls(model, tokenizer, meta, device=device)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of the window(s) each text is read as
        (``aicrush.text_window.model_inputs``), padded to the longest; shape ``[rows, length]``,
        rows = len(texts) unless the model reads several crops per text."""
        import torch

        ids, _ = model_inputs(self.tokenizer, texts, self.max_length, self.text_window, self.crops)
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape ``[len(texts), len(labels)]``, rows in input order.

        Windows are sorted by length before batching (less padding) and put back in order after;
        a text read as several crops gets the mean of their probabilities.
        """
        import torch

        with torch.inference_mode():
            return self._predict_proba(texts, batch_size)

    def _predict_proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids, owner = model_inputs(
            self.tokenizer, texts, self.max_length, self.text_window, self.crops
        )
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), len(self.labels)), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(ids), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = torch.as_tensor(ids[i], dtype=torch.long)
                mask[row, : len(ids[i])] = 1
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out if len(ids) == len(texts) else mean_by_text(out, owner, len(texts))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[Prediction]:
        probs = self.predict_proba(texts, batch_size=batch_size)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[int(i)], float(probs[r, i])) for r, i in enumerate(best)]
