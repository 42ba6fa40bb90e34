"""Load a trained aicrush model folder and classify texts. Used by evaluation, serving and monitoring.

A model folder (the ``Model`` artifact of ``train_model``) holds a Hugging Face
``save_pretrained`` model (safetensors) with ``id2label`` set, its tokenizer, and ``aicrush.json``
(labels, max_length, preset, feature names). An MLflow pyfunc folder that wraps one
(``artifacts/model/``) and the folder KServe mounts (``/mnt/models``) are accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from aicrush.text_window import window_of, window_texts

MODEL_META_FILE = "aicrush.json"


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

    @classmethod
    def from_dir(cls, path: str | Path, device: str | None = None) -> TextClassifier:
        model_dir = resolve_model_dir(path)
        meta = json.loads((model_dir / MODEL_META_FILE).read_text())
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
        return cls(model, tokenizer, meta, device=device)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize the part of each text the model reads (``aicrush.text_window``), truncating to
        the model's limit and padding to the longest text in the batch."""
        enc = self.tokenizer(
            window_texts(texts, self.max_length, self.text_window),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return {
            k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")
        }

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape ``[len(texts), len(labels)]``, rows in input order.

        Texts are sorted by length before batching (less padding) and put back in order after.
        """
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            logits = self.model(**self.encode([texts[i] for i in idx])).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: list[str], batch_size: int = 64) -> list[Prediction]:
        probs = self.predict_proba(texts, batch_size=batch_size)
        best = probs.argmax(axis=1)
        return [Prediction(self.labels[int(i)], float(probs[r, i])) for r, i in enumerate(best)]
