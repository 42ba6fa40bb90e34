"""The drift monitor's HTTP service.

- ``POST /``: a CloudEvent from the KServe payload logger or :mod:`serving.payload_logger`
  (binary, structured or batched mode); 202 when accepted, 400 when malformed, 415 for a
  compressed body (``Content-Encoding``), 413 over the size limit.
- ``GET /metrics``: Prometheus text format (drift gauges, event counters, reference info).
- ``GET /healthz``: liveness and what is monitored.
- ``GET /reports``: recent window verdicts (JSON); ``GET /reports/{id}``: that window's HTML report.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as FastAPIPath
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.monitor.events import EventError, UnsupportedEncoding
from serving.monitor.service import Monitor

#: The most windows ``GET /reports`` lists at once.
MAX_REPORTS = 1000
#: Default limit on one POST's body: 16 MiB (the payload logger's batches of 32 inferences of
#: ~1 KB texts are ~100 KB; a body of tens of MB took the monitor to about 15 times its size).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def create_app(
    monitor: Monitor, tick_s: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The FastAPI app over ``monitor``; closes time windows every ``tick_s`` seconds. A POST
    body over ``max_body_bytes`` is refused with 413 before it is read whole."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick_s)
                await asyncio.to_thread(monitor.tick)

        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="aicrush drift monitor", lifespan=lifespan)

    @app.post("/")
    async def receive(request: Request) -> Response:
        too_large = JSONResponse(
            {"error": f"the body is over the monitor's limit of {max_body_bytes} bytes "
             "(aicrush monitor --max-body-bytes); send fewer inferences per event"},
            status_code=413,
        )  # fmt: skip
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return too_large
        chunks, size = [], 0
        async for chunk in request.stream():  # also bounds a chunked body without a length
            size += len(chunk)
            if size > max_body_bytes:
                return too_large
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            # ?modelversion=N: the version of a revision whose logger (KServe's) does not say it
            version = request.query_params.get("modelversion") or None
            # On a worker thread: a new version's reference may be loaded from MLflow or GCS
            # first, which must not stall the event loop, so /healthz (the liveness probe) and
            # /metrics answer meanwhile; other events wait for the monitor's lock until it is in.
            outcome = await asyncio.to_thread(
                monitor.ingest, request.headers, body, version=version
            )
        except UnsupportedEncoding as exc:  # the model server's answer to a compressed body
            return JSONResponse(
                {"error": str(exc)}, status_code=415, headers={"accept-encoding": "identity"}
            )
        except EventError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"status": outcome}, status_code=202)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(monitor.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict:
        return {
            "status": "ok",
            # model -> the version events without one count for (it follows the champion)
            "default_versions": dict(monitor.default_versions),
            "references": [
                {
                    "model": m,
                    "version": v,
                    "sha256": r.sha256,
                    "rows": len(r.frame),
                    "open_window_rows": len(monitor.windows[(m, v)]),
                }
                for (m, v), r in monitor.references.items()
            ],
        }

    @app.get("/reports")
    def reports(
        limit: Annotated[int, Query(ge=1, le=MAX_REPORTS, description="newest windows")] = 50,
    ) -> list[dict]:
        return monitor.state.results(limit=limit)

    @app.get("/reports/{result_id}")
    def report(result_id: Annotated[int, FastAPIPath(ge=1, le=2**63 - 1)]) -> Response:
        where = monitor.state.result_report(result_id)
        if where is None or where.startswith("gs://") or not Path(where).is_file():
            return JSONResponse(
                {"error": f"window {result_id} has no local HTML report", "report": where},
                status_code=404,
            )
        return HTMLResponse(Path(where).read_text(encoding="utf-8"))

    return app


class MonitorServer:
    """Run the app with uvicorn on a background thread (tests, embedded mode); ``stop()`` ends it."""

    def __init__(
        self, monitor: Monitor, host: str = "127.0.0.1", port: int = 8085, tick_s: float = 5.0
    ):
        import uvicorn

        config = uvicorn.Config(
            create_app(monitor, tick_s), host=host, port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="drift-monitor", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout_s: float = 20.0) -> MonitorServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"drift monitor did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> MonitorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
