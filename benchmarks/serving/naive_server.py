"""The naive KServe predictor: one transformers ``pipeline()`` call per request, no batching.

``python -m benchmarks.serving.naive_server MODEL_DIR PORT`` (V1 only; the baseline for (b)).
"""

from __future__ import annotations

import sys
from typing import Any

from kserve import Model, ModelServer


class NaivePipelineModel(Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.pipe: Any = None

    def load(self) -> bool:
        import torch
        from transformers import pipeline

        torch.set_num_threads(1)  # the same thread setting as our server: compare batching only

        self.pipe = pipeline("text-classification", model=self.model_dir, device="cpu")
        self.ready = True
        return True

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        texts = [i["text"] if isinstance(i, dict) else i for i in payload["instances"]]
        out = self.pipe(texts, truncation=True, max_length=128)
        return {"predictions": [{"label": o["label"], "score": o["score"]} for o in out]}


def main() -> None:
    import logging

    model_dir, port = sys.argv[1], int(sys.argv[2])
    model = NaivePipelineModel("aicrush", model_dir)
    model.load()
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, workers=1,
                enable_latency_logging=False).start([model])  # fmt: skip


if __name__ == "__main__":
    main()
