"""The aicrush KServe predictor: a ``kserve.Model`` that classifies source text by language.

Protocol work only; the pure parts are separate functions you can test without a server:

- :func:`texts_from_v1` / :func:`texts_from_v2` (in serving/decoding.py, shared with the drift
  monitor) decode and validate a request into texts, raising ``kserve.errors.InvalidInput``
  (HTTP 400, gRPC INVALID_ARGUMENT) with a message that says what is wrong;
- :func:`v1_response` / :func:`v2_response` encode predictions.

V1: ``{"instances": [{"text": "..."}]}`` (plain strings accepted) ->
``{"predictions": [{"label": "Python", "score": 0.98}]}``.
V2 (REST and gRPC): input ``text`` (BYTES, shape ``[N]`` or ``[N, 1]``) -> outputs ``label``
(BYTES, ``[N]``), ``score`` (FP32, ``[N]``) and, when the request sets the parameter
``return_probabilities: true``, ``probabilities`` (FP32, ``[N, C]``, columns in the order of the
labels in the model metadata). A request that lists ``outputs`` gets exactly those, in its
order; ``binary_data_output`` / an output's ``binary_data`` parameter answer in KServe's binary
data extension. A V2 response carries the request's ``id``, or a new UUID4 when it had none.

Texts longer than the model's ``max_length`` tokens (aicrush.json) are truncated and answered.
Results come from the dynamic batcher (serving/batching.py): with the torch backend, bit-for-bit
those of a serial call.

Backends (``backend``): ``torch`` (PyTorch eager, serving/torch_backend.py), ``onnx`` and
``onnx-int8`` (ONNX Runtime over the files exported at registration, serving/onnx_backend.py;
torch is never imported). ``auto``: what the model was registered with (``serving_backend`` in
aicrush.json), else ``torch``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput

from aicrush.model_folder import MODEL_META_FILE, recorded_version, resolve_model_dir
from serving.batching import DynamicBatcher, available_cpus
from serving.decoding import (
    INPUT_NAME,
    PROBABILITIES_PARAMETER,
    OutputPlan,
    output_plan,
    texts_from_v1,
    texts_from_v2,
)
from serving.metrics import serving_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedRequest:
    """A validated request: the texts, and what the answer should look like."""

    texts: list[str]
    protocol: str  # "v1", "v2" or "grpc"
    return_probabilities: bool = False
    request_id: str | None = None
    outputs: OutputPlan = field(default_factory=OutputPlan)


def v1_response(labels: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
    return {
        "predictions": [
            {"label": label, "score": float(score)}
            for label, score in zip(labels, scores, strict=True)
        ]
    }


def v2_response(
    model_name: str,
    model_version: str,
    labels: Sequence[str],
    probs: np.ndarray,
    best: np.ndarray,
    plan: OutputPlan,
    request_id: str | None,
    from_grpc: bool,
) -> InferResponse:
    """The V2 response with the outputs of ``plan`` in its order (binary where it says, REST
    only); ``request_id`` is echoed, or a new UUID4 when the request had none."""
    n = len(labels)
    scores = probs[np.arange(n), best].astype(np.float32)
    made = {
        "label": lambda: InferOutput("label", [n], "BYTES", data=list(labels)),
        "score": lambda: InferOutput("score", [n], "FP32", data=[float(s) for s in scores]),
        "probabilities": lambda: InferOutput(
            "probabilities",
            [n, probs.shape[1]],
            "FP32",
            data=[float(x) for x in probs.astype(np.float32).reshape(-1)],
        ),
    }
    outputs = [made[name]() for name in plan.names]
    requested = None
    if plan.explicit or any(plan.binary):
        requested = [
            RequestedOutput(name, {"binary_data": binary})
            for name, binary in zip(plan.names, plan.binary, strict=True)
        ]
    return InferResponse(
        response_id=request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=outputs,
        from_grpc=from_grpc,
        requested_outputs=None if from_grpc else requested,
    )


# --------------------------------------------------------------------------- the model


BACKEND_CHOICES = ("auto", "torch", "onnx", "onnx-int8")


def resolve_backend(model_dir: str | Path, backend: str = "auto") -> str:
    """The backend to serve ``model_dir`` with: ``backend`` itself, or for ``auto`` the one the
    model was registered with (aicrush.json ``serving_backend``), else ``torch``.

    Raises ValueError for a name not in :data:`BACKEND_CHOICES`.
    """
    from serving.onnx_backend import BACKEND_META_KEY

    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if backend != "auto":
        return backend
    meta = json.loads((resolve_model_dir(model_dir) / MODEL_META_FILE).read_text())
    return str(meta.get(BACKEND_META_KEY) or "torch")


def load_backend(
    model_dir: str | Path, backend: str, threads: int = 1, quantize: bool = False
) -> Any:
    """A loaded backend (``.forward(texts, max_batch_size) -> (probs, token counts)``, ``.meta``,
    ``.labels``). ``threads``: intra-op threads (0: the library's default); ``quantize``: torch's
    dynamic int8 (torch backend only). Raises ``serving.onnx_backend.MissingOnnxFiles`` when an
    ONNX backend is asked of a folder without the exported file."""
    backend = resolve_backend(model_dir, backend)
    if backend == "torch":
        from serving.torch_backend import TorchBackend

        return TorchBackend(model_dir, quantize=quantize, threads=threads)
    if quantize:
        raise ValueError(f"--quantize is for the torch backend; {backend} is already what it is")
    from serving.onnx_backend import OnnxBackend

    return OnnxBackend(model_dir, backend, threads=threads)


class TextClassifierModel(Model):
    """KServe predictor for an aicrush model folder (V1 + V2, REST + gRPC, dynamic batching).

    Args:
        name: the model name on the endpoint paths.
        model_dir: the model folder (a train_model artifact, an MLflow download, or /mnt/models).
        version: the model version for metrics and metadata (default: aicrush.json ``version``,
            else ``"1"``).
        max_batch_size, max_wait_ms: dynamic batching bounds.
        quantize: torch dynamic int8 quantization of the linear layers (torch backend).
        backend: ``auto`` | ``torch`` | ``onnx`` | ``onnx-int8`` (see the module docstring).
        threads: intra-op threads of the forward pass (0: the library's default).
        batch_workers: forward passes that run at once, each batch on its own thread
            (``serving.batching.DynamicBatcher``); 0 (default): the CPUs this process may use
            (``serving.batching.available_cpus``: affinity and the cgroup CPU limit) divided by
            ``threads`` (1 when ``threads`` is 0: the library then uses every core).
        payload_logger: the drift monitor's ``PayloadLogger`` (``submit(request_id, model_name,
            model_version, texts, outputs)``, non-blocking) or None.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        version: str | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        quantize: bool = False,
        payload_logger: Any = None,
        backend: str = "auto",
        threads: int = 1,
        batch_workers: int = 0,
    ):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.version = version
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.quantize = quantize
        self.backend = backend
        self.threads = threads
        # Auto: the process's CPUs, each forward pass on ``threads`` of them (with the
        # library's default threads, one per core, one pass at a time).
        self.batch_workers = batch_workers or (
            max(1, available_cpus() // threads) if threads else 1
        )
        self.payload_logger = payload_logger
        self.labels: list[str] = []
        self.max_length = 0
        self.batcher: DynamicBatcher | None = None

    def load(self) -> bool:
        loaded = load_backend(self.model_dir, self.backend, self.threads, self.quantize)
        self.backend = loaded.backend
        meta = loaded.meta
        self.labels = list(meta["labels"])
        self.max_length = int(meta.get("max_length", 256))
        self.version = str(self.version or recorded_version(meta) or "1")
        metrics = serving_metrics()
        metrics.start_series(self.name, self.version, self.labels)  # at 0 before any request
        batch_hist = metrics.batch_size.labels(self.name, self.version)

        def forward(texts: list[str]) -> tuple[np.ndarray, list[int]]:
            return loaded.forward(texts, self.max_batch_size)  # type: ignore[no-any-return]

        self.batcher = DynamicBatcher(
            forward, self.max_batch_size, self.max_wait_ms, on_batch=batch_hist.observe,
            workers=self.batch_workers,
        )  # fmt: skip
        self.batcher.start()
        self.ready = True
        return self.ready

    def describe(self) -> str:
        """One line on how the loaded model is served (the server logs it at start)."""
        threads = self.threads or "the library's default"
        return (
            f"model {self.name} version {self.version}: backend {self.backend}, "
            f"{self.batch_workers} batch worker(s) x {threads} intra-op thread(s), batches of "
            f"up to {self.max_batch_size} texts"
        )

    def oversubscription(self) -> str | None:
        """A warning when batch workers x intra-op threads exceed the CPUs this process may use
        (affinity and cgroup limit): the extra threads only contend for the same cores."""
        cpus = available_cpus()
        used = self.batch_workers * max(1, self.threads or cpus)
        if used <= cpus:
            return None
        return (
            f"{self.batch_workers} batch worker(s) x {self.threads or cpus} intra-op thread(s) "
            f"= {used} threads on the {cpus} CPU(s) this process may use: they contend for the "
            "same cores; leave the batch workers at 0 (auto: --batch_workers, aicrush serve "
            "--batch-workers) or lower them or the threads"
        )

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        if self.payload_logger is not None and hasattr(self.payload_logger, "close"):
            self.payload_logger.close()
        self.ready = False

    # --- metadata
    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]},
        ]

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata, with the labels (the columns of ``probabilities``)."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch" if self.backend == "torch" else "onnxruntime",
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {
                "labels": self.labels,
                "max_length": self.max_length,
                "backend": self.backend,
                "probabilities_parameter": PROBABILITIES_PARAMETER,
            },
        }

    # --- inference
    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None):  # type: ignore[override]
        grpc = isinstance(body, ModelInferRequest) or getattr(body, "from_grpc", False)
        start = time.perf_counter()
        status = "OK"
        try:
            if verb is None:
                return await super().__call__(body, headers)
            return await super().__call__(body, headers, verb)
        except InvalidInput:
            status = "INVALID_ARGUMENT"
            raise
        except ModelNotFound:
            status = "NOT_FOUND"
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            if grpc:  # REST requests are counted by the HTTP middleware (serving/server.py)
                m = serving_metrics()
                m.requests.labels(self.name, self.version, "grpc", status).inc()
                m.request_latency.labels(self.name, self.version, "grpc").observe(
                    time.perf_counter() - start
                )

    async def preprocess(  # type: ignore[override]
        self, payload: Any, headers: dict[str, str] | None = None
    ) -> DecodedRequest:
        request_id = (headers or {}).get("x-request-id")
        if isinstance(payload, ModelInferRequest):
            payload = InferRequest.from_grpc(payload)
        if isinstance(payload, InferRequest):
            if (
                payload.from_grpc
                and payload.model_version
                and payload.model_version != self.version
            ):
                # REST's /versions/{v} is checked by the HTTP guard; gRPC's field only here.
                err = ModelNotFound(self.name)
                err.reason = (
                    f"model {self.name} has no version {payload.model_version}; "
                    f"this server serves version {self.version}"
                )
                raise err
            texts, want = texts_from_v2(payload)
            protocol = "grpc" if payload.from_grpc else "v2"
            return DecodedRequest(
                texts, protocol, want, payload.id or request_id, output_plan(payload)
            )
        return DecodedRequest(texts_from_v1(payload), "v1", False, request_id)

    def validate(self, payload: Any) -> Any:
        return payload

    async def predict(  # type: ignore[override]
        self, payload: DecodedRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        if self.batcher is None:
            from kserve.errors import ModelNotReady

            raise ModelNotReady(self.name)
        result = await self.batcher.submit(payload.texts)
        probs = result.probabilities
        best = probs.argmax(axis=1)
        labels = [self.labels[int(i)] for i in best]
        self._observe(payload.texts, result.token_lengths, labels)
        if payload.protocol == "v1":
            response: dict[str, Any] | InferResponse = v1_response(
                labels, probs[np.arange(len(labels)), best]
            )
        else:
            response = v2_response(
                self.name,
                self.version or "",
                labels,
                probs,
                best,
                payload.outputs,
                payload.request_id,
                payload.protocol == "grpc",
            )
        if self.payload_logger is not None:
            self._log_payload(payload, labels, probs[np.arange(len(labels)), best])
        return response

    def _observe(self, texts: list[str], token_lengths: list[int], labels: list[str]) -> None:
        m = serving_metrics()
        version = self.version or ""
        tok = m.input_tokens.labels(self.name, version)
        chars = m.input_chars.labels(self.name, version)
        for text, n in zip(texts, token_lengths, strict=True):
            tok.observe(n)
            chars.observe(len(text))
        for label in labels:
            m.predictions.labels(self.name, version, label).inc()

    def _log_payload(self, payload: DecodedRequest, labels: list[str], scores: np.ndarray) -> None:
        """Queue the request for the payload logger (``submit`` never blocks; it drops when full).

        The texts are logged, not features: the drift monitor computes features from them with
        the shared feature function (:func:`request_features`), off the serving path entirely.
        """
        outputs = [{"label": lb, "score": float(s)} for lb, s in zip(labels, scores, strict=True)]
        try:
            self.payload_logger.submit(
                payload.request_id or "", self.name, self.version or "", payload.texts, outputs
            )
        except Exception:  # logging must never fail a request
            log.exception("payload logging failed for request %s", payload.request_id)


def request_features(texts: list[str]) -> list[dict[str, float]]:
    """Request-time features of ``texts`` through the Feast on-demand feature view's own
    transformation (``features.store.request_features``), i.e. the training feature function."""
    from features.store import request_features as on_demand_features

    frame = on_demand_features(texts)
    return [{k: float(v) for k, v in row.items()} for row in frame.to_dict("records")]
