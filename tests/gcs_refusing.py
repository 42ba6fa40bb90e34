"""A GCS endpoint that refuses every request with 401, for tests of the "no Google credentials"
paths; tests/conftest.py makes it every test's fixture."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def gcs_refusing_anonymous(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A GCS endpoint that answers 401 to everything, as Google does to anonymous requests
    (MLflow's GCS artifact store falls back to an anonymous client when it finds no
    credentials). ``STORAGE_EMULATOR_HOST`` makes every google-cloud-storage client anonymous and
    sends it here, so google.auth raises what it raises with no credentials at all."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            body = json.dumps(
                {"error": {"code": 401, "message": "Anonymous caller does not have access."}}
            ).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _refuse

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
