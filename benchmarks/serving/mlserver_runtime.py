"""The peer: MLServer serving the same model through its custom-runtime API, for bench_serving (c).

MLServer runs in its own virtual environment (``mlserver``, ``onnxruntime``, ``tokenizers``,
``numpy``; no torch, no KServe). This runtime loads the same exported ONNX file with the same
code as our server (``serving.onnx_backend.OnnxBackend``: same tokenization, same windows, same
ONNX Runtime session options), so the comparison is of the server stacks: MLServer's REST
layer and adaptive batching against KServe's REST layer and our batcher.

``mlserver_huggingface`` is not used: its HuggingFaceRuntime imports optimum's exporter, which
did not import with the locked torch/transformers when tried (2026-11-23, docs/serving.md).

model-settings.json ``parameters.extra``: ``model_dir`` (the model folder), ``backend``
(``onnx`` | ``onnx-int8``), ``threads`` (intra-op threads). V2 input ``text`` (BYTES ``[N]``)
-> outputs ``label`` (BYTES ``[N]``), ``score`` (FP32 ``[N]``).
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class AicrushOnnxRuntime(MLModel):
    async def load(self) -> bool:
        from serving.onnx_backend import OnnxBackend

        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.backend = OnnxBackend(
            extra["model_dir"], extra.get("backend", "onnx-int8"), int(extra.get("threads", 1))
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        probs, _ = self.backend.forward(texts)
        best = probs.argmax(axis=1)
        labels = [self.backend.labels[int(i)] for i in best]
        scores = probs[np.arange(len(texts)), best].astype(np.float32)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                StringCodec.encode_output("label", labels),
                NumpyCodec.encode_output("score", scores),
            ],
        )
