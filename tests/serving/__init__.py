"""Helpers for the serving tests: a real aicrush model server on loopback, in a subprocess.

A subprocess (not the test process) because KServe's REST app is a module-level singleton and
because SIGTERM handling is part of what is tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "aicrush"
MODEL_VERSION = "7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    name: str = MODEL_NAME
    version: str = MODEL_VERSION

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running_server(
    model_dir: Path,
    log_dir: Path,
    *extra_args: str,
    startup_timeout: float = 90.0,
    scheme: str = "http",
    launcher: Sequence[str] = ("-m", "serving.server"),
) -> Iterator[RunningServer]:
    """Start ``python -m serving.server`` on free loopback ports; SIGTERM it afterwards.

    ``scheme="https"``: poll readiness over TLS (any certificate), for ``--ssl_certfile`` runs.
    ``launcher``: what follows ``python`` (a script that calls ``serving.server.main``, e.g.
    with torch made unimportable).
    """
    http_port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"server-{http_port}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, *launcher,
        "--model_dir", str(model_dir),
        "--model_name", MODEL_NAME,
        "--model_version", MODEL_VERSION,
        "--http_port", str(http_port),
        "--grpc_port", str(grpc_port),
        "--host", "127.0.0.1",
        "--torch_threads", "1",
        *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(proc, http_port, grpc_port, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"model server exited with {proc.returncode}:\n{server.log()}")
            try:
                ready = f"{scheme}://127.0.0.1:{http_port}/v2/health/ready"
                if httpx.get(ready, timeout=2, verify=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"model server not ready in {startup_timeout}s:\n{server.log()}")
            time.sleep(0.25)
        yield server
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def v2_body(texts: list[str], **parameters: object) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]
    }
    if parameters:
        body["parameters"] = parameters
    return body


SNIPPETS = [
    "def main():\n    print('hello')\n",
    "#include <stdio.h>\nint main(void) { return 0; }\n",
    "function f(x) { return x * 2; }\nconsole.log(f(3));",
    "body { color: red; margin: 0 auto; }",
    "#!/bin/sh\necho $HOME\nls -la | grep x\n",
    "x",
    "SELECT * FROM t WHERE a = 1;",
    "import os\n" * 200,  # longer than max_length tokens: truncated
]


_SHARED: dict[str, RunningServer] = {}


def shared_server(model_dir: Path, config: object, log_dir: Path) -> RunningServer:
    """One server for all serving test modules of a session (startup costs seconds).

    Stopped at the end of the session through ``config.add_cleanup``.
    """
    key = str(model_dir)
    if key not in _SHARED:
        ctx = running_server(model_dir, log_dir, "--max_batch_wait_ms", "20")
        _SHARED[key] = ctx.__enter__()

        def cleanup() -> None:
            _SHARED.pop(key, None)
            ctx.__exit__(None, None, None)

        config.add_cleanup(cleanup)  # type: ignore[attr-defined]
    return _SHARED[key]
