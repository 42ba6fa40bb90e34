"""KServe's own model server with nothing of aicrush in it, around a model that does no work:
the per-request cost of KServe's REST stack alone (uvicorn, FastAPI, KServe's middleware and V1
endpoint), for bench_serving.py's (d).

``python -m benchmarks.serving.kserve_noop_server PORT [--enable_access_log false] [--workers N]
[--log_config_file F] [--block_ms MS]``: answers each V1 instance with one fixed label. Started as
``kserve.ModelServer`` is in KServe's own examples, with its per-request timing log lines off as
aicrush runs it (``kserve.trace``: KServe's TimingMiddleware logs two per request whatever
``enable_latency_logging`` says). ``--workers`` and ``--log_config_file`` are KServe's own flags
(it reads them from ``sys.argv``): N > 1 is KServe's multiprocess mode, whose worker processes
configure their logging from that file only, not from the settings made here
(benchmarks/bench_kserve_workers.py). ``--block_ms`` holds the process for that long per
request (``time.sleep`` on the event loop: a forward pass that occupies the worker without using
a core, so the figures do not depend on what else runs on the machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import kserve


class NoopModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, block_s: float = 0.0) -> None:
        super().__init__("aicrush")
        self.block_s = block_s
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None) -> dict[str, Any]:
        if isinstance(payload, bytes | bytearray):  # KServe passes a non-JSON Content-Type raw
            payload = json.loads(payload)
        if self.block_s:
            time.sleep(self.block_s)  # blocks the event loop: the worker serves nothing else
        return {"predictions": [{"label": "noop", "score": 1.0} for _ in payload["instances"]]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int, help="REST port (gRPC is off)")
    parser.add_argument(
        "--enable_access_log",
        dest="access_log",
        default="true",
        choices=("true", "false"),
        help="one uvicorn access line per request (default true)",
    )
    parser.add_argument(
        "--block_ms",
        type=float,
        default=0.0,
        help="hold the process this many ms per request (default 0: no work)",
    )
    # KServe's own flags (--workers, --log_config_file) are read by KServe from sys.argv.
    args, _ = parser.parse_known_args()
    # access_log_format explicitly: KServe parses sys.argv when kserve.model_server is imported
    # (abbreviations included: a flag named --access_log was read as its --access_log_format).
    server = kserve.ModelServer(
        http_port=args.port,
        enable_grpc=False,
        enable_latency_logging=False,
        access_log_format=None,
    )  # workers: KServe's default, its --workers flag
    # After ModelServer(), which configures KServe's loggers (as serving.server does).
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if args.access_log == "false":  # as serving.server turns it off
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
        access.disabled = True
    server.start([NoopModel(args.block_ms / 1000)])


if __name__ == "__main__":
    main()
