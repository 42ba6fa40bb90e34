"""Local canary backend: a traffic-splitting proxy on localhost in front of two model servers.

```
client -> proxy :PORT --(100-p) %--> model server (stable version)  :P1
                     '----- p % --> model server (canary version)  :P2
```

The proxy (:class:`SplitProxy`, an ASGI app under uvicorn) forwards every request unchanged to one
upstream, chosen by smooth weighted round robin, so the observed split matches the percentage
exactly over any 100 consecutive requests. A route change is one in-memory swap; a retired
upstream is only stopped after its in-flight requests finished, so no request is dropped. The
proxy counts every request it forwards (``aicrush_requests_total``, latency histogram, predicted
labels, by model version) and mirrors a share of stable requests to the canary to measure
agreement: the analysis reads these from the proxy's ``/metrics``.

Processes outlive the CLI call that started them; their ids and ports are kept in
``<state>/rollout/local.json`` and logs in ``<state>/rollout/logs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serving.rollout.machine import ModelRef, RolloutError
from serving.rollout.metrics_source import LATENCY, ScrapeDriftVerdict, ScrapeMetricsSource

log = logging.getLogger(__name__)

CONTROL = "/-/rollout"
#: (model_dir, model_name, version, port, log_file) -> the started server process
#: (model_dir, model_name, version, port, log_file[, log_to=URL]) -> the server process
ServerLauncher = Callable[..., subprocess.Popen]
#: ModelRef -> a local model folder (downloads registry artifacts when needed)
ModelFetcher = Callable[[ModelRef], Path]


# ---------------------------------------------------------------------------------------------
# The proxy (runs in its own process: ``python -m serving.rollout.local proxy --port P``)
# ---------------------------------------------------------------------------------------------


def _labels(body: bytes) -> list[str]:
    """Predicted labels of a V1 (``predictions``) or V2 (output named ``label``) response."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if isinstance(doc, dict) and isinstance(doc.get("predictions"), list):
        return [str(p.get("label")) if isinstance(p, dict) else str(p) for p in doc["predictions"]]
    if isinstance(doc, dict) and isinstance(doc.get("outputs"), list):
        for out in doc["outputs"]:
            if isinstance(out, dict) and out.get("name") == "label":
                return [str(x) for x in out.get("data", [])]
    return []


#: Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself; every other header of a
#: request or response is end-to-end and passes the proxy unchanged.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip


def end_to_end_headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The end-to-end headers of raw ``(name, value)`` pairs, as a dict for httpx."""
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in pairs
        if k.decode("latin-1").lower() not in HOP_BY_HOP
    }


class SplitProxy:
    """ASGI app: forwards to the stable or the canary upstream; control API under ``/-/rollout``."""

    def __init__(self, model_name: str = "", mirror_fraction: float = 0.0, timeout_s: float = 60.0):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        from serving.metrics import LATENCY_BUCKETS

        self.model_name = model_name
        self.mirror_fraction = mirror_fraction
        self.timeout_s = timeout_s
        self.routes: dict[str, Any] = {"stable": None, "canary": None, "percent": 0}
        self._acc = 0
        self.inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aicrush_requests",
            "Requests forwarded by the rollout proxy.",
            ["model", "version", "protocol", "status", "role"],
            registry=self.registry,
        )
        self.latency = Histogram(
            LATENCY,
            "Latency through the rollout proxy.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "aicrush_predictions",
            "Predicted labels seen by the proxy.",
            ["model", "version", "label"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "aicrush_rollout_mirrored",
            "Stable requests mirrored to the canary.",
            ["model", "version", "agree"],
            registry=self.registry,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    def pick(self) -> tuple[str, dict[str, str]] | None:
        """Smooth weighted round robin: exactly p of every 100 consecutive requests go to the canary."""
        stable, canary, percent = (
            self.routes["stable"],
            self.routes["canary"],
            int(self.routes["percent"]),
        )
        if canary is None or percent <= 0:
            return ("stable", stable) if stable else None
        if stable is None or percent >= 100:
            return "canary", canary
        self._acc += percent
        if self._acc >= 100:
            self._acc -= 100
            return "canary", canary
        return "stable", stable

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path: str = scope["path"]
        version, extra = "", {}
        if path.startswith(CONTROL) or path == "/metrics":
            status, payload, ctype = await self._control(scope["method"], path, body)
        else:
            status, payload, ctype, version, extra = await self._forward(scope, body)
        headers = [(b"content-type", ctype.encode())]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        if version:
            headers.append((b"x-aicrush-model-version", version.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _forward(
        self, scope: dict, body: bytes
    ) -> tuple[int, bytes, str, str, dict[str, str]]:
        """(status, body, content type, version, the upstream's other end-to-end headers)."""
        choice = self.pick()
        extra: dict[str, str] = {}
        if choice is None:
            return (
                503,
                b'{"error": "no model deployed behind the rollout proxy"}',
                "application/json",
                "",
                extra,
            )
        role, upstream = choice
        url = upstream["url"]
        self.inflight[url] = (
            self.inflight.get(url, 0) + 1
        )  # counted before the first await: drains are exact
        protocol = "v2" if scope["path"].startswith("/v2/") else "v1"
        version = upstream["version"]
        started = time.perf_counter()
        try:
            target = (
                url
                + scope["path"]
                + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
            )
            headers = end_to_end_headers(scope["headers"])
            try:
                r = await self.client.request(
                    scope["method"], target, content=body, headers=headers
                )
                status, payload, ctype = (
                    r.status_code,
                    r.content,
                    r.headers.get("content-type", "application/json"),
                )
                # e.g. inference-header-content-length of a binary V2 response, x-request-id
                extra = end_to_end_headers(
                    (k, v) for k, v in r.headers.raw if k.lower() != b"content-type"
                )
            except httpx.HTTPError as err:
                status, payload, ctype = (
                    502,
                    json.dumps({"error": f"upstream {version}: {err!r}"}).encode(),
                    "application/json",
                )
        finally:
            self.inflight[url] -= 1
        is_predict = scope["method"] == "POST"
        if is_predict:
            self.requests.labels(self.model_name, version, protocol, str(status), role).inc()
            self.latency.labels(self.model_name, version, protocol).observe(
                time.perf_counter() - started
            )
            if status == 200:
                labels = _labels(payload)
                for label in labels:
                    self.predictions.labels(self.model_name, version, label).inc()
                canary = self.routes["canary"]
                if (
                    role == "stable"
                    and canary
                    and labels
                    and random.random() < self.mirror_fraction
                ):
                    task = asyncio.create_task(self._mirror(canary, scope, body, headers, labels))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        return status, payload, ctype, version, extra

    async def _mirror(
        self, canary: dict, scope: dict, body: bytes, headers: dict, labels: list[str]
    ) -> None:
        url = canary["url"]
        self.inflight[url] = self.inflight.get(url, 0) + 1
        try:
            r = await self.client.request(
                scope["method"], url + scope["path"], content=body, headers=headers
            )
            if r.status_code == 200:
                other = _labels(r.content)
                agree = "true" if other == labels else "false"
                self.mirrored.labels(self.model_name, canary["version"], agree).inc()
        except httpx.HTTPError:
            pass  # a failing canary shows in its own requests; mirrors only measure agreement
        finally:
            self.inflight[url] -= 1

    async def _control(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        from prometheus_client import generate_latest

        if path == "/metrics":
            return 200, generate_latest(self.registry), "text/plain; version=0.0.4"
        if path == f"{CONTROL}/healthy":
            return 200, b'{"healthy": true}', "application/json"
        if path == f"{CONTROL}/routes" and method == "GET":
            return (
                200,
                json.dumps({**self.routes, "inflight": self.inflight}).encode(),
                "application/json",
            )
        if path == f"{CONTROL}/routes" and method == "PUT":
            new = json.loads(body)
            old_urls = {r["url"] for r in (self.routes["stable"], self.routes["canary"]) if r}
            self.routes = {
                "stable": new.get("stable"),
                "canary": new.get("canary"),
                "percent": int(new.get("percent", 0)),
            }
            self._acc = 0
            new_urls = {r["url"] for r in (self.routes["stable"], self.routes["canary"]) if r}
            retired = old_urls - new_urls
            deadline = time.monotonic() + float(new.get("drain_timeout_s", 60))
            while any(self.inflight.get(u, 0) for u in retired) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            drained = not any(self.inflight.get(u, 0) for u in retired)
            return (
                200,
                json.dumps({"routes": self.routes, "drained": drained}).encode(),
                "application/json",
            )
        return 404, b'{"error": "unknown control path"}', "application/json"


def run_proxy(port: int, model_name: str, mirror_fraction: float, host: str = "127.0.0.1") -> None:
    import uvicorn

    uvicorn.run(
        SplitProxy(model_name, mirror_fraction),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


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
    return _spawn(cmd, log_file)


def _spawn(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
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


def default_fetcher(ref: ModelRef) -> Path:
    """A local folder for the version: the path itself, or the registry artifacts downloaded once."""
    uri = ref.uri.removeprefix("file://")
    if Path(uri).exists():
        return Path(uri)
    import mlflow

    from aicrush.model_folder import resolve_model_dir

    return resolve_model_dir(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri))


def _alive(pid: int | None) -> bool:
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


def _stop(pid: int | None, grace_s: float = 10.0) -> None:
    if not _alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
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
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


@dataclass
class LocalBackend:
    """Stable and canary model servers on localhost behind one splitting proxy."""

    state_dir: Path  # <state>/rollout
    model_name: str = "aicrush-classifier"
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
            and _alive(procs.proxy_pid)
            and self._healthy(f"http://127.0.0.1:{procs.proxy_port}")
        ):
            return
        port = procs.proxy_port or self.port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "serving.rollout.local",
            "proxy",
            "--port",
            str(port),
            "--model-name",
            self.model_name,
            "--mirror-fraction",
            str(self.mirror_fraction),
        ]
        proc = _spawn(cmd, self.state_dir / "logs" / "proxy.log")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not self._healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc.pid)
                raise RolloutError(
                    f"the rollout proxy did not start on port {port}; see {self.state_dir / 'logs' / 'proxy.log'}"
                )
            time.sleep(0.1)
        procs.proxy_port, procs.proxy_pid = port, proc.pid
        procs.save(self._file)
        if procs.stable and _alive(procs.stable.pid):  # a restarted proxy gets its routes back
            canary = procs.canary if procs.canary and _alive(procs.canary.pid) else None
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
                _stop(info.pid)
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

        r = httpx.put(
            f"http://127.0.0.1:{procs.proxy_port}{CONTROL}/routes",
            json={"stable": route(stable), "canary": route(canary), "percent": percent},
            timeout=90,
        )
        r.raise_for_status()
        procs.percent = percent if canary else 0
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
        except Exception:
            for s in (new_stable if need_stable else None, new_canary):
                if s:
                    _stop(s.pid)
            raise
        procs.stable, procs.canary = new_stable, new_canary
        procs.save(self._file)
        for s in old:  # already out of the routes and drained
            _stop(s.pid)

    def set_traffic(self, percent: int) -> None:
        procs = self._require(canary=True)
        self._put_routes(procs, procs.stable, procs.canary, percent)
        procs.save(self._file)

    def promote(self) -> None:
        procs = self._require(canary=True)
        old = procs.stable
        self._put_routes(
            procs, procs.canary, None, 0
        )  # returns after the old stable's requests finished
        procs.stable, procs.canary = procs.canary, None
        procs.save(self._file)
        if old:
            _stop(old.pid)

    def rollback(self) -> None:
        procs = self._require(canary=True)
        old = procs.canary
        self._put_routes(procs, procs.stable, None, 0)
        procs.canary = None
        procs.save(self._file)
        if old:
            _stop(old.pid)

    def status(self) -> dict[str, Any]:
        procs = LocalProcesses.load(self._file)
        out: dict[str, Any] = {"endpoint": self.url, "proxy_alive": _alive(procs.proxy_pid)}
        try:
            out["routes"] = httpx.get(f"{self.url}{CONTROL}/routes", timeout=2).json()
        except httpx.HTTPError as err:
            out["routes"] = None
            out["error"] = f"proxy not answering: {err}"
        for role in ("stable", "canary"):
            s: ServerInfo | None = getattr(procs, role)
            out[role] = (
                None
                if s is None
                else {"version": s.version, "port": s.port, "pid": s.pid, "alive": _alive(s.pid)}
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
        """Stop the proxy and both servers (``aicrush serve --stop``, tests)."""
        procs = LocalProcesses.load(self._file)
        for s in (procs.canary, procs.stable):
            if s:
                _stop(s.pid)
        _stop(procs.proxy_pid)
        self._file.unlink(missing_ok=True)

    def _require(self, canary: bool) -> LocalProcesses:
        procs = LocalProcesses.load(self._file)
        if procs.stable is None or (canary and procs.canary is None):
            raise RolloutError(
                "no local canary is running; start one with `aicrush deploy --backend local`"
            )
        if not self._healthy(self.url):
            raise RolloutError(
                f"the local rollout proxy at {self.url} is not answering; run `aicrush deploy` again"
            )
        return procs


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serving.rollout.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy", help="run the traffic-splitting proxy")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model-name", default="")
    p.add_argument("--mirror-fraction", type=float, default=0.0)
    args = parser.parse_args(argv)
    run_proxy(args.port, args.model_name, args.mirror_fraction, host=args.host)


if __name__ == "__main__":
    main()
