"""Local canary backend: stable and canary model servers on localhost behind one splitting proxy.

```
client -> proxy :PORT --(100-p) %--> model server (stable version)  :P1
                     '----- p % --> model server (canary version)  :P2
```

:class:`LocalBackend` moves traffic by telling the proxy (:mod:`serving.rollout.proxy`) its routes,
and starts and stops the processes through the supervisor (:mod:`serving.rollout.processes`).
A new server takes traffic only once it answers; a retired one is stopped only after the proxy
drained its in-flight requests. ``aicrush stop`` (:meth:`LocalBackend.shutdown`) stops them all.
"""

from __future__ import annotations

import logging
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aicrush.config import DEFAULT_MODEL_NAME
from serving.rollout.machine import ModelRef, RolloutError
from serving.rollout.metrics_source import ScrapeDriftVerdict, ScrapeMetricsSource
from serving.rollout.processes import (
    LocalProcesses,
    ServerInfo,
    alive,
    default_launcher,
    free_port,
    spawn,
    stop,
)
from serving.rollout.proxy import CONTROL, TOKEN_ENV, TOKEN_HEADER

log = logging.getLogger(__name__)

#: (model_dir, model_name, version, port, log_file[, log_to=URL]) -> the started server process
ServerLauncher = Callable[..., subprocess.Popen]
#: ModelRef -> a local model folder (downloads registry artifacts when needed)
ModelFetcher = Callable[[ModelRef], Path]

__all__ = ["LocalBackend", "ModelFetcher", "ServerLauncher", "default_fetcher", "default_launcher"]


def default_fetcher(ref: ModelRef) -> Path:
    """A local folder for the version: the path itself, or the registry artifacts downloaded once."""
    uri = ref.uri.removeprefix("file://")
    if Path(uri).exists():
        return Path(uri)
    import mlflow

    from aicrush.errors import google_credentials
    from aicrush.model_folder import resolve_model_dir

    with google_credentials(f"version {ref.version} ({ref.uri})"):  # artifacts in gs://
        # mlflow-artifacts:/ URIs resolve against the registry's server, not the process's URI
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=ref.uri, tracking_uri=ref.tracking_uri or None
        )
    return resolve_model_dir(local)


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether the proxy could listen on ``port``. With SO_REUSEADDR, as uvicorn binds it: the
    TIME_WAIT sockets that connections closed by the stopped proxy leave for a minute do not
    count as in use (without it, every `aicrush stop` soon after traffic moved the endpoint),
    while a socket listening on the port still does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class LocalBackend:
    """Stable and canary model servers on localhost behind one splitting proxy."""

    state_dir: Path  # <state>/rollout
    model_name: str = DEFAULT_MODEL_NAME
    port: int = 0  # the proxy's port; 0: a free one on first start
    mirror_fraction: float = 0.2
    launcher: ServerLauncher = default_launcher
    fetcher: ModelFetcher = default_fetcher
    ready_timeout_s: float = 180.0
    log_to: str = ""  # the drift monitor's ingest URL; "": no payload logging
    name: str = field(default="local", init=False)

    @property
    def _file(self) -> Path:
        return self.state_dir / "local.json"

    @property
    def url(self) -> str:
        """The one endpoint clients call."""
        return f"http://127.0.0.1:{LocalProcesses.load(self._file).proxy_port or self.port}"

    # -- processes -------------------------------------------------------------------------

    def _ensure_proxy(self, procs: LocalProcesses) -> None:
        if (
            procs.proxy_pid
            and alive(procs.proxy_pid)
            and self._healthy(f"http://127.0.0.1:{procs.proxy_port}")
        ):
            return
        port = procs.proxy_port or self.port or free_port()
        if not procs.proxy_pid and procs.proxy_port and not self.port and not _bindable(port):
            # The port kept from before `aicrush stop` is taken by now: another one, said aloud.
            log.warning("the rollout proxy's port %d is in use; the endpoint moves", port)
            port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "serving.rollout.proxy",
            "--port",
            str(port),
            "--model-name",
            self.model_name,
            "--mirror-fraction",
            str(self.mirror_fraction),
        ]
        # A fresh secret per proxy: only this process and local.json's owner know it.
        token = secrets.token_urlsafe(32)
        proc = spawn(cmd, self.state_dir / "logs" / "proxy.log", env={TOKEN_ENV: token})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        try:
            while not self._healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RolloutError(
                        f"the rollout proxy did not start on port {port}; see {self.state_dir / 'logs' / 'proxy.log'}"
                    )
                time.sleep(0.1)
        except BaseException:
            # Not recorded yet: a proxy left running here (Ctrl-C while it started) held the
            # port unknown to `aicrush stop`, and the next deploy moved the endpoint.
            stop(proc.pid)
            raise
        procs.proxy_port, procs.proxy_pid, procs.proxy_token = port, proc.pid, token
        procs.save(self._file)
        if procs.stable and alive(procs.stable.pid):  # a restarted proxy gets its routes back
            canary = procs.canary if procs.canary and alive(procs.canary.pid) else None
            self._put_routes(procs, procs.stable, canary, procs.percent)

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return httpx.get(f"{url}{CONTROL}/healthy", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_servers(self, refs: list[ModelRef]) -> list[ServerInfo]:
        """Launch one server per version at once (start-up is mostly imports), then wait for all."""
        started: list[tuple[ServerInfo, subprocess.Popen, Path]] = []
        try:
            for ref in refs:
                model_dir = self.fetcher(ref)
                port = free_port()
                log_file = self.state_dir / "logs" / f"server-v{ref.version}.log"
                extra = {"log_to": self.log_to} if self.log_to else {}
                proc = self.launcher(
                    model_dir, self.model_name, ref.version, port, log_file, **extra
                )
                started.append(
                    (ServerInfo(ref.version, port, proc.pid, str(model_dir)), proc, log_file)
                )
            deadline = time.monotonic() + self.ready_timeout_s
            for info, proc, log_file in started:
                while not self._ready(info):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = (
                            log_file.read_text(errors="replace")[-2000:]
                            if log_file.is_file()
                            else ""
                        )
                        raise RolloutError(
                            f"model server for version {info.version} did not become ready on port "
                            f"{info.port}; log {log_file}:\n{tail}"
                        )
                    time.sleep(0.2)
        except BaseException:
            for info, _, _ in started:
                stop(info.pid)
            raise
        return [info for info, _, _ in started]

    def _ready(self, info: ServerInfo) -> bool:
        try:
            return (
                httpx.get(f"{info.url}/v1/models/{self.model_name}", timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def _put_routes(
        self,
        procs: LocalProcesses,
        stable: ServerInfo | None,
        canary: ServerInfo | None,
        percent: int,
    ) -> None:
        def route(s: ServerInfo | None) -> dict[str, str] | None:
            return {"version": s.version, "url": s.url} if s else None

        percent = percent if canary else 0  # e.g. a restarted proxy whose canary died meanwhile
        r = httpx.put(
            f"http://127.0.0.1:{procs.proxy_port}{CONTROL}/routes",
            json={"stable": route(stable), "canary": route(canary), "percent": percent},
            headers={TOKEN_HEADER: procs.proxy_token},
            timeout=90,
        )
        if r.status_code != 200:
            raise RolloutError(
                f"the rollout proxy refused the new routes ({r.status_code}): {r.text[:500]}"
            )
        procs.percent = percent
        if not r.json().get("drained", True):
            log.warning(
                "in-flight requests to a retired server did not finish within the drain timeout"
            )

    # -- Backend ---------------------------------------------------------------------------

    def deploy(self, stable: ModelRef, canary: ModelRef | None, percent: int) -> None:
        procs = LocalProcesses.load(self._file)
        self._ensure_proxy(procs)
        need_stable = (
            procs.stable is None
            or procs.stable.version != stable.version
            or not self._ready(procs.stable)
        )
        # Both servers start together; routes change only once every new server answers, so a
        # failed start leaves the proxy routing exactly as before.
        infos = self._start_servers(
            ([stable] if need_stable else []) + ([canary] if canary else [])
        )
        new_stable = infos.pop(0) if need_stable else procs.stable
        new_canary = infos.pop(0) if canary else None
        old = [s for s in (procs.stable if need_stable else None, procs.canary) if s]
        try:
            self._put_routes(procs, new_stable, new_canary, percent if canary else 0)
        except BaseException:  # Ctrl-C too: no server left running unrecorded
            for s in (new_stable if need_stable else None, new_canary):
                if s:
                    stop(s.pid)
            raise
        procs.stable, procs.canary = new_stable, new_canary
        procs.save(self._file)
        for s in old:  # already out of the routes and drained
            stop(s.pid)

    def set_traffic(self, percent: int, *, canary: str | None = None) -> None:
        procs = self._require(canary=True, version=canary)
        self._put_routes(procs, procs.stable, procs.canary, percent)
        procs.save(self._file)

    def promote(self, *, canary: str | None = None) -> None:
        procs = self._require(canary=True, version=canary)
        old = procs.stable
        self._put_routes(
            procs, procs.canary, None, 0
        )  # returns after the old stable's requests finished
        procs.stable, procs.canary = procs.canary, None
        procs.save(self._file)
        if old:
            stop(old.pid)

    def rollback(self, *, canary: str | None = None) -> None:
        procs = self._require(canary=True, version=canary)
        old = procs.canary
        self._put_routes(procs, procs.stable, None, 0)
        procs.canary = None
        procs.save(self._file)
        if old:
            stop(old.pid)

    def status(self) -> dict[str, Any]:
        """``running`` (a proxy was started and not stopped), ``endpoint`` (the proxy's URL, None
        when not running), ``routes`` (what the proxy forwards), ``stable``/``canary`` servers and
        ``healthy``."""
        procs = LocalProcesses.load(self._file)
        if not procs.proxy_pid:
            return {
                "running": False,
                "endpoint": None,
                "proxy_alive": False,
                "routes": None,
                "stable": None,
                "canary": None,
                "healthy": False,
            }
        out: dict[str, Any] = {
            "running": True,
            "endpoint": self.url,
            "proxy_alive": alive(procs.proxy_pid),
        }
        try:
            r = httpx.get(
                f"{self.url}{CONTROL}/routes",
                headers={TOKEN_HEADER: procs.proxy_token},
                timeout=2,
            )
            r.raise_for_status()
            out["routes"] = r.json()
        except httpx.HTTPError as err:
            out["routes"] = None
            out["error"] = f"proxy not answering: {err}"
        for role in ("stable", "canary"):
            s: ServerInfo | None = getattr(procs, role)
            out[role] = (
                None
                if s is None
                else {"version": s.version, "port": s.port, "pid": s.pid, "alive": alive(s.pid)}
            )
        out["healthy"] = bool(
            out["proxy_alive"]
            and out["stable"]
            and out["stable"]["alive"]
            and (out["canary"] is None or out["canary"]["alive"])
        )
        return out

    def metrics_source(self) -> ScrapeMetricsSource:
        return ScrapeMetricsSource([f"{self.url}/metrics"])

    def drift_verdict(self) -> ScrapeDriftVerdict | None:
        """The verdict of the drift monitor the servers log to (None: they log nowhere)."""
        if not self.log_to:
            return None
        from urllib.parse import urljoin

        return ScrapeDriftVerdict(urljoin(self.log_to, "/metrics"), self.model_name)

    def shutdown(self) -> None:
        """Stop the proxy and both servers (``aicrush stop``, tests)."""
        procs = LocalProcesses.load(self._file)
        # The proxy first (it finishes what it is forwarding), then the servers behind it: the
        # other order answered the requests in between with 502 (counted as server errors).
        stop(procs.proxy_pid)
        for s in (procs.canary, procs.stable):
            if s:
                stop(s.pid)
        # Only the proxy's port is kept: the next `aicrush deploy` serves on the same endpoint.
        LocalProcesses(proxy_port=procs.proxy_port).save(self._file)

    def _require(self, canary: bool, version: str | None = None) -> LocalProcesses:
        procs = LocalProcesses.load(self._file)
        if procs.stable is None or (canary and procs.canary is None):
            raise RolloutError(
                "no local canary is running; start one with `aicrush deploy --backend local`"
            )
        if version is not None and procs.canary is not None and procs.canary.version != version:
            raise RolloutError(
                f"the local canary is version {procs.canary.version}, not {version}: it changed "
                "meanwhile; see `aicrush status`"
            )
        if not self._healthy(self.url):
            raise RolloutError(
                f"the local rollout proxy at {self.url} is not answering; run `aicrush deploy` again"
            )
        return procs
