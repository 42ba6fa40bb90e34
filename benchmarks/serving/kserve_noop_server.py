"""KServe's own model server with nothing of aicrush in it, around a model that does no work:
the per-request cost of KServe's REST stack alone (uvicorn, FastAPI, KServe's middleware and V1
endpoint), for (d).

``python -m benchmarks.serving.kserve_noop_server PORT [--access_log false]``: answers every
instance with one fixed label. Started as ``kserve.ModelServer`` is in KServe's own examples, with
its per-request latency log lines off (as aicrush runs it).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kserve


class NoopModel(kserve.Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("aicrush")
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None) -> dict[str, Any]:
        return {"predictions": [{"label": "noop", "score": 1.0} for _ in payload["instances"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--access_log", default="true", choices=("true", "false"))
    args = parser.parse_args()
    server = kserve.ModelServer(
        http_port=args.port, enable_grpc=False, enable_latency_logging=False
    )
    logging.getLogger("uvicorn.access").disabled = args.access_log == "false"
    server.start([NoopModel()])


if __name__ == "__main__":
    main()
