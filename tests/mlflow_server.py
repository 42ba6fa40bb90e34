"""A real MLflow tracking server on loopback (SQLite store, proxied artifacts) for tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.rollout.processes import free_port


@dataclass
class MlflowServer:
    """``url`` of the server; ``stop()`` ends it early (to test what an outage does)."""

    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


@contextmanager
def mlflow_server(root: Path, timeout_s: float = 120) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with its store and artifacts under ``root``; stop it on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with running_mlflow_server(args, port, root, timeout_s=timeout_s) as server:
        yield server


@contextmanager
def running_mlflow_server(
    args: list[str],
    port: int,
    root: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[MlflowServer]:
    """``mlflow server ARGS`` (listening on loopback ``port``) run in ``root`` with ``env``
    (None: this one's), its output in ``root/server.log``; yields it once ``/health`` answers
    and stops it on exit."""
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield server
    finally:
        server.stop()
