"""The local rollout's process supervisor: start, find and stop detached processes on localhost.

The proxy and the model servers outlive the CLI call that started them (each in its own session);
their ids and ports are kept in ``<state>/rollout/local.json`` (:class:`LocalProcesses`) and their
logs in ``<state>/rollout/logs/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from serving.rollout.machine import RolloutError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def default_launcher(
    model_dir: Path, model_name: str, version: str, port: int, log_file: Path, log_to: str = ""
) -> subprocess.Popen:
    """Start the aicrush model server (``serving.server``) for one version on ``port``; with
    ``log_to``, the server sends its payload logs (CloudEvents) there (the drift monitor)."""
    if importlib.util.find_spec("serving.server") is None:
        raise RolloutError(
            "serving.server (the aicrush model server) is not installed; cannot start a model server"
        )
    cmd = [
        sys.executable, "-m", "serving.server",
        "--model_dir", str(model_dir), "--model_name", model_name, "--model_version", version,
        "--http_port", str(port), "--host", "127.0.0.1", "--enable_grpc", "false", "--torch_threads", "1",
    ]  # fmt: skip
    if log_to:
        cmd += ["--log_to", log_to]
    return spawn(cmd, log_file)


def spawn(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        # A new session: the servers outlive the CLI command that started them.
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError, ValueError):  # a zombie (our exited child) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def stop(pid: int | None, grace_s: float = 10.0) -> None:
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


@dataclass
class ServerInfo:
    version: str
    port: int
    pid: int
    model_dir: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalProcesses:
    proxy_port: int = 0
    proxy_pid: int = 0
    stable: ServerInfo | None = None
    canary: ServerInfo | None = None
    percent: int = 0  # the canary's share, re-applied if the proxy has to be restarted
    proxy_token: str = ""  # the proxy's control secret (serving.rollout.proxy.TOKEN_HEADER)

    @classmethod
    def load(cls, path: Path) -> LocalProcesses:
        if not path.is_file():
            return cls()
        d = json.loads(path.read_text())
        return cls(
            d["proxy_port"],
            d["proxy_pid"],
            ServerInfo(**d["stable"]) if d.get("stable") else None,
            ServerInfo(**d["canary"]) if d.get("canary") else None,
            int(d.get("percent", 0)),
            str(d.get("proxy_token", "")),
        )

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only: the file holds the proxy's token."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a .tmp left from before keeps its mode otherwise
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(self), indent=2))
        tmp.replace(path)
