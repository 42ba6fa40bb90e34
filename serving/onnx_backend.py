"""The ONNX Runtime backend: export a model folder to ONNX, quantize it, and run it without torch.

Files, written next to the safetensors weights by :func:`export_onnx` (``register_model`` calls it
at registration, so a registered model version carries them):

- ``model.onnx``: the fp32 graph of the sequence classifier plus a softmax; input ``input_ids``
  (int64, ``[batch, sequence]``, both axes dynamic), output ``probabilities`` (float32,
  ``[batch, labels]``). No attention mask: the server never pads (length bucketing,
  serving/batching.py), so every row is whole.
- ``model.int8.onnx``: the same graph with dynamic int8 quantization of its MatMul weights
  (``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized per call
  at run time, so :class:`OnnxBackend` runs each text's windows as their own call).
- ``aicrush.json`` gains ``"onnx": {"files": {"onnx": ..., "onnx-int8": ...}, "opset": N,
  "torch": VERSION}`` (registration adds ``label_agreement`` and ``serving_backend``).

Serving (:class:`OnnxBackend`) imports onnxruntime, numpy and the ``tokenizers`` library only,
never torch or transformers (whose ``AutoTokenizer`` imports torch when it is installed;
tests/serving/test_onnx_backend.py checks ``sys.modules``), and reads texts exactly as the torch
path does (``aicrush.text_window.model_inputs``: window, crops, truncation).

    python -m serving.onnx_backend MODEL_DIR     # export both files into MODEL_DIR
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aicrush.model_folder import MODEL_META_FILE, resolve_model_dir
from aicrush.text_window import crops_of, window_of
from serving.batching import probabilities_unpadded

#: The ONNX backends and their files (the torch backend reads model.safetensors).
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
ONNX_META_KEY = "onnx"
#: aicrush.json key: the backend a model was registered to be served with (serving.backend).
BACKEND_META_KEY = "serving_backend"
OPSET = 17


class MissingOnnxFiles(FileNotFoundError):
    """A model folder asked to serve with an ONNX backend has no exported ONNX file."""


def export_onnx(
    model_dir: str | Path, quantize: bool = True, opset: int = OPSET
) -> dict[str, Path]:
    """Export the model folder's classifier to ``model.onnx`` (and ``model.int8.onnx``) in place.

    Needs torch (the export runs the model once through TorchScript tracing; ``dynamo=False``: the
    dynamo exporter needs onnxscript, which the lock does not hold). Records the files in
    ``aicrush.json`` under ``onnx``. Returns ``{backend: path}``.
    Raises FileNotFoundError for a folder without an aicrush model.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = resolve_model_dir(model_dir)
    meta = json.loads((folder / MODEL_META_FILE).read_text())
    # Eager attention: the traced SDPA graph adds no speed in ONNX Runtime and exports less simply.
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=True, attn_implementation="eager"
    ).eval()

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(input_ids=input_ids).logits.float(), dim=-1)

    length = min(16, int(meta.get("max_length", 16)))
    example = torch.full((2, length), 5, dtype=torch.long)
    fp32 = folder / ONNX_FILES["onnx"]
    with torch.inference_mode():
        torch.onnx.export(
            WithSoftmax(model),
            (example,),
            str(fp32),
            input_names=["input_ids"],
            output_names=["probabilities"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "probabilities": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    files = {"onnx": fp32}
    if quantize:
        files["onnx-int8"] = quantize_onnx(fp32, folder / ONNX_FILES["onnx-int8"])
    meta[ONNX_META_KEY] = {
        "files": {k: p.name for k, p in files.items()},
        "opset": opset,
        "torch": torch.__version__,
    }
    (folder / MODEL_META_FILE).write_text(json.dumps(meta, indent=2))
    return files


def quantize_onnx(fp32: Path, out: Path) -> Path:
    """Dynamic int8 quantization of ``fp32``'s MatMul weights (ONNX Runtime's quantizer)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return out


def onnx_file(model_dir: Path, backend: str) -> Path:
    """The ONNX file of ``backend`` in ``model_dir``; :class:`MissingOnnxFiles` (saying how to
    get it) when the folder has none."""
    if backend not in ONNX_FILES:
        raise ValueError(
            f"unknown ONNX backend {backend!r}; expected one of {', '.join(ONNX_FILES)}"
        )
    path = model_dir / ONNX_FILES[backend]
    if not path.is_file():
        raise MissingOnnxFiles(
            f"{model_dir} has no {ONNX_FILES[backend]} (backend {backend}): the ONNX files are "
            "written at registration (register_model); export them "
            f"with `python -m serving.onnx_backend {model_dir}`, or serve with --backend torch"
        )
    return path


class FastTokenizer:
    """The model folder's ``tokenizer.json`` through the ``tokenizers`` library, called like a
    Hugging Face fast tokenizer for what ``aicrush.text_window.model_inputs`` asks of it.

    ``transformers.AutoTokenizer`` imports torch whenever it is installed; this does not.
    ``__call__(texts, truncation, max_length, padding=False)`` -> ``{"input_ids": [[int]]}``,
    special tokens added, truncation from the right as transformers does (tested equal on the
    tiny preset's tokenizer and MiniLM's in tests/serving/test_onnx_backend.py).
    Safe to call from several threads (``--batch_workers``): each truncation setting has its own
    ``Tokenizer``, configured once, so no call changes a tokenizer that another thread's call
    reads (``enable_truncation`` changes it in place).
    Raises FileNotFoundError when the folder has no ``tokenizer.json`` (a slow-only tokenizer).
    """

    def __init__(self, model_dir: Path) -> None:
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{model_dir} has no tokenizer.json (a fast tokenizer), which the ONNX backend "
                "reads; save the tokenizer with a fast tokenizer class, or serve with --backend torch"
            )
        self._json = path.read_text(encoding="utf-8")
        self._by_truncation: dict[int, Any] = {}  # max_length (0: none) -> its own Tokenizer
        self._lock = threading.Lock()
        self._tokenizer_for(0)  # a broken tokenizer.json fails at load, not at the first request

    def _tokenizer_for(self, max_length: int) -> Any:
        tokenizer = self._by_truncation.get(max_length)
        if tokenizer is None:
            from tokenizers import Tokenizer

            with self._lock:
                tokenizer = self._by_truncation.get(max_length)
                if tokenizer is None:
                    tokenizer = Tokenizer.from_str(self._json)
                    tokenizer.no_padding()
                    if max_length:
                        tokenizer.enable_truncation(max_length)
                    else:
                        tokenizer.no_truncation()
                    self._by_truncation[max_length] = tokenizer
        return tokenizer

    def __call__(
        self,
        texts: Sequence[str],
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool = False,
        verbose: bool = True,  # transformers' flag for its length warning; this one never warns
    ) -> dict[str, list[list[int]]]:
        if padding:
            raise ValueError("FastTokenizer does not pad: the server never pads")
        tokenizer = self._tokenizer_for(int(max_length or 0) if truncation else 0)
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return {"input_ids": [e.ids for e in encodings]}


class OnnxBackend:
    """An ONNX Runtime session over an exported model folder, with its tokenizer and labels.

    Args:
        model_dir: the model folder (or a folder holding one, see ``resolve_model_dir``).
        backend: ``onnx`` (fp32) or ``onnx-int8``.
        threads: ONNX Runtime intra-op threads (0: ONNX Runtime's default, one per core).
        spin: let idle intra-op threads spin (faster on a dedicated node, much slower when the
            cores are shared; off by default).
    Raises :class:`MissingOnnxFiles` when the folder lacks the file.
    """

    def __init__(
        self, model_dir: str | Path, backend: str = "onnx", threads: int = 1, spin: bool = False
    ) -> None:
        import onnxruntime as ort

        self.model_dir = resolve_model_dir(model_dir)
        self.meta: dict[str, Any] = json.loads((self.model_dir / MODEL_META_FILE).read_text())
        self.backend = backend
        path = onnx_file(self.model_dir, backend)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spinning = "1" if spin else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = FastTokenizer(self.model_dir)
        self.labels: list[str] = list(self.meta["labels"])
        self.max_length = int(self.meta.get("max_length", 256))
        self.text_window = window_of(self.meta)
        self.crops = crops_of(self.meta)

    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Probabilities ``[batch, labels]`` (float32) of unpadded rows ``[batch, sequence]``."""
        return self.session.run(["probabilities"], {"input_ids": input_ids.astype(np.int64)})[0]

    def forward(
        self, texts: Sequence[str], max_batch_size: int = 64
    ) -> tuple[np.ndarray, list[int]]:
        """Class probabilities ``[len(texts), labels]`` and each text's token count, read as the
        torch path reads them (``serving.batching.probabilities_unpadded``).

        Each text's windows run as their own call, for both backends: ``onnx-int8``'s dynamic
        quantization scales activations over the whole input, so rows sharing a call would
        change each other's results (measured: 64 of 64 texts differed, up to 0.005 in
        probability), and fp32 ONNX Runtime kernels give a row a result that depends on the rows
        sharing its call too (18 of 93 texts of a trained model differed by ~1e-8). Per text,
        a text's result is the same whatever it is batched with (tested bitwise); the cost is
        nil for this model (a text is up to 8 windows: 558 vs 580 texts/s at batch 1 vs 32)."""
        return probabilities_unpadded(
            self.run,
            len(self.labels),
            self.tokenizer,
            texts,
            self.max_length,
            max_batch_size,
            self.text_window,
            self.crops,
            per_text=True,
        )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m serving.onnx_backend MODEL_DIR [--no-int8]``: export the ONNX files."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--no-int8", action="store_true", help="export the fp32 file only")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for backend, path in export_onnx(args.model_dir, quantize=not args.no_int8).items():
        print(f"{backend}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
