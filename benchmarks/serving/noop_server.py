"""Our server (middleware, batcher, metrics) around a model that does no work, for (d).

``python -m benchmarks.serving.noop_server MODEL_DIR PORT``: answers uniform probabilities.
"""

from __future__ import annotations

import sys

import numpy as np

from serving.batching import DynamicBatcher
from serving.predictor import TextClassifierModel
from serving.server import run_model_server


class NoopModel(TextClassifierModel):
    def load(self) -> bool:
        self.labels = ["noop"]
        self.max_length = 128
        self.version = "noop"

        def forward(texts: list[str]) -> tuple[np.ndarray, list[int]]:
            return np.ones((len(texts), 1), dtype=np.float32), [len(t) for t in texts]

        self.batcher = DynamicBatcher(forward, self.max_batch_size, 0.0)
        self.batcher.start()
        self.ready = True
        return True


def main() -> None:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    model = NoopModel("aicrush", model_dir)
    model.load()
    run_model_server(model, http_port=port, grpc_port=port + 1, enable_grpc=False)


if __name__ == "__main__":
    main()
