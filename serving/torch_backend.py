"""The PyTorch eager backend of the model server: load a model folder, batch-invariant forward.

A linear layer fed one row (the pooler and the classification head of a single request) runs a
matrix-vector kernel whose rounding differs from the matrix-matrix kernel used for many rows.
:func:`make_batch_invariant` pads such small inputs to ``MIN_GEMM_ROWS`` rows (zeros, sliced off
after), so every row takes the same kernel: with length bucketing (serving/batching.py) a
batched call gives bit-for-bit the probabilities of the same text sent alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aicrush.text_window import crops_of, window_of
from serving.batching import probabilities_unpadded

MIN_GEMM_ROWS = 16


class _MinRowsLinear(torch.nn.Linear):
    """A Linear layer that pads inputs of fewer than MIN_GEMM_ROWS rows with zero rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[:-1].numel()
        if rows >= MIN_GEMM_ROWS:
            return super().forward(x)
        flat = x.reshape(rows, x.shape[-1])
        padded = torch.cat([flat, flat.new_zeros(MIN_GEMM_ROWS - rows, flat.shape[1])])
        return super().forward(padded)[:rows].reshape(*x.shape[:-1], self.out_features)


def make_batch_invariant(model: torch.nn.Module) -> torch.nn.Module:
    """Make every fp32 ``nn.Linear`` in ``model`` take the matrix-matrix path for any batch size.

    In place (the weights are kept); quantized layers are left as they are.
    """
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = _MinRowsLinear
    return model


def load_torch_model(model_dir: Path, quantize: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """Model (eval, SDPA attention where supported, batch-invariant linear layers, optionally
    int8-quantized), tokenizer, meta."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aicrush.model_folder import MODEL_META_FILE, no_progress_bar, resolve_model_dir

    model_dir = resolve_model_dir(model_dir)
    meta = json.loads((model_dir / MODEL_META_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with no_progress_bar():  # none in a server's start log
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, use_safetensors=True, attn_implementation="sdpa"
            )
        except (ValueError, ImportError):  # an architecture without SDPA support
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, use_safetensors=True
            )
    model.eval()
    if quantize:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    make_batch_invariant(model)  # after quantization, which looks for plain nn.Linear
    return model, tokenizer, meta


def torch_rows_fn(model: Any) -> Any:
    """The forward pass over unpadded token id rows: ``[batch, sequence]`` int64 ->
    probabilities ``[batch, labels]`` float32 (softmax of the logits, in torch)."""
    device = next(model.parameters()).device

    def run(input_ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(input_ids).to(device)).logits
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    return run


def predict_proba_unpadded(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    max_batch_size: int = 64,
    text_window: str = "head",
    crops: int = 1,
) -> tuple[np.ndarray, list[int]]:
    """``serving.batching.probabilities_unpadded`` with a torch model's forward pass."""
    return probabilities_unpadded(
        torch_rows_fn(model),
        model.config.num_labels,
        tokenizer,
        texts,
        max_length,
        max_batch_size,
        text_window,
        crops,
    )


class TorchBackend:
    """A torch model folder ready for the server: ``forward(texts) -> (probs, token counts)``.

    Args:
        model_dir: the model folder.
        quantize: torch dynamic int8 quantization of the linear layers.
        threads: torch intra-op threads (0: leave torch's default).
    """

    backend = "torch"

    def __init__(self, model_dir: str | Path, quantize: bool = False, threads: int = 1) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.meta = load_torch_model(Path(model_dir), quantize)
        self.labels: list[str] = list(self.meta["labels"])
        self.max_length = int(self.meta.get("max_length", 256))
        self.text_window = window_of(self.meta)
        self.crops = crops_of(self.meta)
        self.run = torch_rows_fn(self.model)
        self._tokenizer_lock = threading.Lock()

    def _tokenize(self, *args: Any, **kwargs: Any) -> Any:
        # A transformers fast tokenizer sets the truncation a call asks for on its backend
        # tokenizer in place: the lock keeps one thread's setting out of another's call
        # (--batch_workers). Tokenizing is short next to the forward pass.
        with self._tokenizer_lock:
            return self.tokenizer(*args, **kwargs)

    def forward(
        self, texts: Sequence[str], max_batch_size: int = 64
    ) -> tuple[np.ndarray, list[int]]:
        return probabilities_unpadded(
            self.run,
            len(self.labels),
            self._tokenize,
            texts,
            self.max_length,
            max_batch_size,
            self.text_window,
            self.crops,
        )
