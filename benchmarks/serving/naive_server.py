"""The naive KServe predictor: one unbatched forward pass per request, no batching.

``python -m benchmarks.serving.naive_server MODEL_DIR PORT`` (V1 only; the baseline for (b)).
Each request runs ``aicrush.model_folder.TextClassifier.predict`` (torch eager fp32, the
kernel's reference classifier) on its own texts: the same windows and crops as our server reads,
so the comparison is of the serving work (batching, backend), not of how much text is read.
"""

from __future__ import annotations

import sys
from typing import Any

from kserve import Model, ModelServer


class NaiveModel(Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.classifier: Any = None

    def load(self) -> bool:
        import torch

        from aicrush.model_folder import TextClassifier

        torch.set_num_threads(1)  # the same thread setting as our server: compare serving only
        self.classifier = TextClassifier.from_dir(self.model_dir, device="cpu")
        self.ready = True
        return True

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        texts = [i["text"] if isinstance(i, dict) else i for i in payload["instances"]]
        out = self.classifier.predict(texts)
        return {"predictions": [{"label": p.label, "score": p.score} for p in out]}


def main() -> None:
    import logging

    model_dir, port = sys.argv[1], int(sys.argv[2])
    model = NaiveModel("aicrush", model_dir)
    model.load()
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, workers=1,
                enable_latency_logging=False).start([model])  # fmt: skip


if __name__ == "__main__":
    main()
