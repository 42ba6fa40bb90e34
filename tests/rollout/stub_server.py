"""A stand-in model server (stdlib only, starts in well under a second) for rollout tests.

``python -m tests.rollout.stub_server NAME PORT MODE [DELAY_S]``: answers the V1 model-readiness
and predict endpoints. MODE ``ok`` predicts "Python" for every text, ``fail`` answers 500 to
every prediction (a broken canary), ``slow`` answers after DELAY_S seconds.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(name: str, mode: str, delay_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == f"/v1/models/{name}":
                self._send(200, {"name": name, "ready": True})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            doc = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            if mode == "fail":
                self._send(500, {"error": "RuntimeError : deliberately broken canary"})
                return
            if mode == "slow":
                time.sleep(delay_s)
            self._send(
                200,
                {
                    "predictions": [
                        {"label": "Python", "score": 0.9} for _ in doc.get("instances", [])
                    ]
                },
            )

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    name, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    delay_s = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(name, mode, delay_s))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
