"""The parts of a cluster that cannot run here, emulated around real processes.

- :class:`RevisionController` plays KServe + Knative for one InferenceService stored in the
  fake API server (``tests.rollout.fake_kube``): for each new revision it runs KServe's storage
  initializer step (downloads ``STORAGE_URI`` from object storage into the revision's own
  folder) and starts a real model server process with the container's own arguments; when that
  answers ready it marks the revision ready (``FakeKube.mark_ready``), which applies the traffic
  split the spec asks for.
- :class:`Router` plays the Knative ingress/activator and each revision's queue-proxy: it splits
  requests between revisions per ``status.components.predictor.traffic`` and exports the
  queue-proxy's series per revision (``revision_request_count`` with ``response_code_class``,
  ``revision_request_latencies`` in milliseconds), answering 502 when a revision's server is
  gone, as the queue-proxy does.
- :func:`start_prometheus` runs a real Prometheus scraping the router and every model server
  (file-based service discovery, 1 s interval).
- :class:`TrainJobController` plays Kubeflow Trainer + JobSet for the TrainJobs stored in the fake
  API server: jobs created, pods starting, running, then the worker (a callable given the
  worker CLI that torchrun would start on rank 0, parsed by torchrun's own argument parser with
  the ``PET_*`` variables the torch plugin sets), then ``Complete`` or ``Failed``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

#: Knative's request-latency buckets (milliseconds).
LATENCY_BUCKETS_MS = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def download_storage_uri(uri: str, dst: Path) -> Path:
    """KServe's storage initializer for ``gs://bucket/prefix``: every object below the prefix."""
    from google.cloud import storage

    bucket, _, prefix = uri[len("gs://") :].partition("/")
    prefix = prefix.rstrip("/") + "/"
    client = storage.Client()
    n = 0
    for blob in client.list_blobs(bucket, prefix=prefix):
        rel = blob.name[len(prefix) :]
        if not rel:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        n += 1
    if n == 0:
        raise FileNotFoundError(f"no objects under {uri}")
    return dst


@dataclass
class Revision:
    name: str
    version: str
    port: int
    proc: subprocess.Popen
    log: Path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RevisionController(threading.Thread):
    """KServe + Knative for ``namespace/name`` in a ``FakeKube`` with ``auto_ready=False``."""

    def __init__(self, kube: Any, namespace: str, name: str, root: Path, env: dict[str, str]):
        super().__init__(daemon=True, name="revision-controller")
        self.kube, self.namespace, self.name = kube, namespace, name
        self.root, self.env = root, env
        self.revisions: dict[str, Revision] = {}
        self.events: list[tuple[float, str, str]] = []  # (time, event, revision)
        self.errors: list[str] = []
        self._halt = threading.Event()
        self.on_change: list[Any] = []

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        for rev in self.revisions.values():
            if rev.proc.poll() is None:
                rev.proc.terminate()
        for rev in self.revisions.values():
            try:
                rev.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                rev.proc.kill()

    def crash(self, version: str) -> str:
        """Kill the model server of ``version`` (a canary that crashes); returns its revision."""
        for rev in self.revisions.values():
            if rev.version == version:
                rev.proc.kill()
                rev.proc.wait(timeout=10)
                self.events.append((time.time(), "crashed", rev.name))
                return rev.name
        raise KeyError(f"no revision serves version {version}")

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._reconcile()
            except Exception as err:  # keep reconciling; the test reads the errors
                self.errors.append(repr(err))
            time.sleep(0.2)

    def _reconcile(self) -> None:
        key = (self.namespace, self.name)
        pending = self.kube.pending.get(key)
        if pending is None:
            return
        obj = self.kube.get(*key)
        revision = pending["components"]["predictor"]["latestCreatedRevision"]
        share = sum(
            int(t.get("percent") or 0)
            for t in pending["components"]["predictor"].get("traffic") or []
            if t.get("revisionName") == revision
        )
        if share == 0 and revision in self.revisions:
            # A rollback: the route moves to the ready previous revision whatever the state of
            # the latest one (a crashed canary included).
            if self.kube.mark_ready(*key):
                self.events.append((time.time(), "routed-away", revision))
            return
        if revision not in self.revisions:
            self._start(revision, obj["spec"]["predictor"])
        rev = self.revisions[revision]
        if rev.proc.poll() is not None:
            return  # a crashed server never becomes ready again here
        try:
            ok = (
                httpx.get(f"http://127.0.0.1:{rev.port}/v2/health/ready", timeout=2).status_code
                == 200
            )
        except httpx.HTTPError:
            ok = False
        if ok and self.kube.mark_ready(*key):
            self.events.append((time.time(), "ready", revision))
            for callback in self.on_change:
                callback()

    def _start(self, revision: str, predictor: dict) -> None:
        container = predictor["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        folder = self.root / revision
        model_dir = download_storage_uri(env["STORAGE_URI"], folder / "mnt" / "models")
        args = list(container["args"])
        version = args[args.index("--model_version") + 1]
        port = free_port()
        args[args.index("--model_dir") + 1] = str(model_dir)
        args[args.index("--http_port") + 1] = str(port)
        log = folder / "server.log"
        cmd = [
            *self.env.get("PYTHON", "python3").split(),
            "-m",
            "serving.server",
            *args,
            "--host",
            "127.0.0.1",
            "--enable_grpc",
            "false",
            "--torch_threads",
            "1",
        ]
        logger = (predictor.get("logger") or {}).get("url")
        if logger:  # KServe's logger agent: every request and response to the drift monitor
            cmd += ["--log_to", logger, "--log_batch_size", "8", "--log_linger_ms", "100"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=folder,
                env={k: v for k, v in self.env.items() if k != "PYTHON"},
            )
        self.revisions[revision] = Revision(revision, version, port, proc, log)
        self.events.append((time.time(), "started", revision))
        for callback in self.on_change:
            callback()


class Router:
    """Knative's routing and queue-proxy metrics for the InferenceService's revisions."""

    def __init__(self, kube: Any, controller: RevisionController, namespace: str, name: str):
        self.kube, self.controller = kube, controller
        self.namespace, self.name = namespace, name
        self._lock = threading.Lock()
        self._acc: dict[str, float] = {}
        self.counts: dict[tuple[str, str], float] = {}  # (revision, code) -> n
        self.latency: dict[str, list[float]] = {}  # revision -> bucket counts (+Inf last)
        self.latency_sum: dict[str, float] = {}
        self.client = httpx.Client(timeout=30)
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = router.exposition().encode()
                    self._reply(200, body, {"content-type": "text/plain; version=0.0.4"})
                else:
                    self._forward(b"")

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("content-length", 0) or 0)))

            def _forward(self, body: bytes) -> None:
                status, payload, headers = router.forward(
                    self.command, self.path, body, dict(self.headers)
                )
                self._reply(status, payload, headers)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Router:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def pick(self) -> str | None:
        """Weighted round robin over the traffic block (deterministic shares)."""
        obj = self.kube.get(self.namespace, self.name)
        traffic = ((obj or {}).get("status") or {}).get("components", {}).get("predictor", {})
        entries = [
            (t["revisionName"], int(t.get("percent") or 0))
            for t in traffic.get("traffic") or []
            if int(t.get("percent") or 0) > 0
        ]
        if not entries:
            return None
        with self._lock:
            for rev, pct in entries:
                self._acc[rev] = self._acc.get(rev, 0.0) + pct / 100.0
            rev = max(entries, key=lambda e: self._acc[e[0]])[0]
            self._acc[rev] -= 1.0
        return rev

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        revision = self.pick()
        if revision is None:
            return 503, b'{"error": "no revision is routed"}', {"content-type": "application/json"}
        rev = self.controller.revisions.get(revision)
        started = time.perf_counter()
        try:
            if rev is None or rev.proc.poll() is not None:
                raise httpx.ConnectError("the revision's model server is not running")
            r = self.client.request(
                method,
                f"http://127.0.0.1:{rev.port}{path}",
                content=body,
                headers={k: v for k, v in headers.items() if k.lower() in ("content-type",)},
            )
            status, payload = r.status_code, r.content
            out = {"content-type": r.headers.get("content-type", "application/json")}
        except httpx.HTTPError as err:  # what the queue-proxy answers for a dead container
            status, payload = 502, json.dumps({"error": repr(err)}).encode()
            out = {"content-type": "application/json"}
        out["x-revision"] = revision
        if method == "POST":
            self._observe(revision, status, (time.perf_counter() - started) * 1000.0)
        return status, payload, out

    def _observe(self, revision: str, status: int, ms: float) -> None:
        with self._lock:
            key = (revision, str(status))
            self.counts[key] = self.counts.get(key, 0.0) + 1
            buckets = self.latency.setdefault(revision, [0.0] * (len(LATENCY_BUCKETS_MS) + 1))
            buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
            self.latency_sum[revision] = self.latency_sum.get(revision, 0.0) + ms

    def exposition(self) -> str:
        """The queue-proxy's series in Prometheus text format (names as Knative exports them)."""
        ns = self.namespace
        lines = ["# TYPE revision_request_count counter"]
        with self._lock:
            for (rev, code), n in sorted(self.counts.items()):
                labels = (
                    f'namespace_name="{ns}",configuration_name="{self.name}-predictor",'
                    f'revision_name="{rev}",response_code="{code}",'
                    f'response_code_class="{code[0]}xx"'
                )
                lines.append(f"revision_request_count{{{labels}}} {n}")
            lines.append("# TYPE revision_request_latencies histogram")
            for rev, buckets in sorted(self.latency.items()):
                base = f'namespace_name="{ns}",revision_name="{rev}"'
                cumulative = 0.0
                for le, n in zip([*LATENCY_BUCKETS_MS, "+Inf"], buckets, strict=True):
                    cumulative += n
                    lines.append(
                        f'revision_request_latencies_bucket{{{base},le="{le}"}} {cumulative}'
                    )
                lines.append(f"revision_request_latencies_count{{{base}}} {cumulative}")
                lines.append(f"revision_request_latencies_sum{{{base}}} {self.latency_sum[rev]}")
        return "\n".join(lines) + "\n"


def start_prometheus(root: Path, targets: list[str]) -> tuple[subprocess.Popen, str, Path]:
    """A real Prometheus (1 s scrapes) over ``targets`` (host:port), rewritable in ``sd.json``."""
    root.mkdir(parents=True, exist_ok=True)
    sd = root / "sd.json"
    write_targets(sd, targets)
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: cluster\n"
        f"    file_sd_configs: [{{files: ['{sd}'], refresh_interval: 1s}}]\n"
    )
    port = free_port()
    log = open(root / "prometheus.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return proc, url, sd
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"Prometheus did not start; see {root / 'prometheus.log'}")


def write_targets(sd: Path, targets: list[str]) -> None:
    tmp = sd.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": {"namespace": "aicrush"}}]))
    tmp.replace(sd)


def torchrun_invocation(job: dict, node_rank: int = 0) -> tuple[Any, dict[str, str]]:
    """What torchrun makes of a TrainJob's trainer on node ``node_rank``: its parsed arguments
    (``torch.distributed.run``'s own parser) under the ``PET_*`` environment Kubeflow Trainer's
    torch plugin sets (``pkg/runtime/framework/plugins/torch``), and that environment."""
    import os

    from torch.distributed.run import get_args_parser

    trainer = job["spec"]["trainer"]
    name = job["metadata"]["name"]
    if trainer["command"][:1] != ["torchrun"]:
        raise ValueError(f"the trainer command must start with torchrun: {trainer['command']}")
    env = {
        "PET_NNODES": str(trainer.get("numNodes", 1)),
        "PET_NPROC_PER_NODE": str(trainer.get("numProcPerNode", "auto")),
        "PET_NODE_RANK": str(node_rank),
        "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
        "PET_MASTER_PORT": "29400",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = get_args_parser().parse_args([*trainer["command"][1:], *trainer.get("args", [])])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return args, env


def worker_options(job: dict) -> dict[str, str]:
    """The worker CLI's options (``--config`` ... ``--metrics-output``) of a TrainJob, keyed
    without dashes, as torchrun hands them to ``python -m components.train_worker``."""
    args, _ = torchrun_invocation(job)
    if not args.module:
        raise ValueError("torchrun must run the worker as a module (--module)")
    rest = list(args.training_script_args)
    if len(rest) % 2:
        raise ValueError(f"worker options are not --flag value pairs: {rest}")
    return {rest[i].removeprefix("--"): rest[i + 1] for i in range(0, len(rest), 2)}


class TrainJobController(threading.Thread):
    """Kubeflow Trainer + JobSet for every TrainJob in a ``FakeKube``.

    Each job moves one stage per ``tick_s``: Created (jobsStatus active) -> pods running (ready)
    -> ``worker(job)`` runs -> ``Complete``; a worker that raises :class:`WorkerFailed` (or any
    error) gives ``Failed`` with its reason and message. ``hold`` (an Event, set = released)
    keeps jobs running until the test releases it. ``lockstep``: a job moves on only after a
    client has read it (a GET of the job) since its last change, so a watcher sees every stage
    however slowly it polls (a test of the sequence of states must not depend on timing).
    """

    def __init__(
        self,
        kube: Any,
        worker: Any,
        tick_s: float = 0.05,
        hold: threading.Event | None = None,
        lockstep: bool = False,
    ):
        super().__init__(daemon=True, name="trainjob-controller")
        self.kube, self.worker, self.tick_s, self.hold = kube, worker, tick_s, hold
        self.lockstep = lockstep
        self.reads_seen: dict[tuple[str, str], int] = {}
        self.stage: dict[tuple[str, str], int] = {}
        self.errors: list[str] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def __enter__(self) -> TrainJobController:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        while not self._halt.wait(self.tick_s):
            try:
                for key in list(self.kube.trainjobs):
                    self._advance(key)
            except Exception as err:  # keep reconciling; the test reads the errors
                self.errors.append(repr(err))

    def _advance(self, key: tuple[str, str]) -> None:
        job = self.kube.get_trainjob(*key)
        if job is None:
            return
        uid = job["metadata"]["uid"]
        stage = self.stage.get((key[1], uid), 0)
        if self.lockstep:
            reads = sum(
                1 for c in list(self.kube.calls)
                if c.method == "GET" and c.path.endswith(f"/trainjobs/{key[1]}")
            )  # fmt: skip
            if reads <= self.reads_seen.get((key[1], uid), 0):
                return  # nobody has read the current state yet
            self.reads_seen[(key[1], uid)] = reads
        created = {"type": "Created", "status": "True", "reason": "JobsCreationSucceeded",
                   "message": "Succeeded to create Jobs"}  # fmt: skip
        if stage == 0:
            status = {"conditions": [created],
                      "jobsStatus": [{"name": "node", "active": 1, "ready": 0, "succeeded": 0,
                                      "failed": 0, "suspended": 0}]}  # fmt: skip
        elif stage == 1:
            status = {"conditions": [created],
                      "jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0,
                                      "failed": 0, "suspended": 0}]}  # fmt: skip
        elif stage == 2:
            if self.hold is not None and not self.hold.is_set():
                return
            try:
                self.worker(job)
                done = {"type": "Complete", "status": "True", "reason": "JobsCompleted",
                        "message": "jobset completed successfully"}  # fmt: skip
                jobs = {"active": 0, "ready": 0, "succeeded": 1, "failed": 0}
            except Exception as err:  # a crashed worker: the job fails, as a pod's exit would
                reason, message = (
                    (err.reason, err.message) if isinstance(err, WorkerFailed)
                    else ("FailedJobs", f"jobset failed: {err!r}")
                )  # fmt: skip
                done = {"type": "Failed", "status": "True", "reason": reason, "message": message}
                jobs = {"active": 0, "ready": 0, "succeeded": 0, "failed": 1}
            status = {"conditions": [created, done],
                      "jobsStatus": [{"name": "node", "suspended": 0, **jobs}]}  # fmt: skip
        else:
            return
        self.kube.set_trainjob_status(*key, status)
        self.stage[(key[1], uid)] = stage + 1


class WorkerFailed(Exception):
    """Raised by a test's worker: the TrainJob fails with this reason and message."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def upload_folder(folder: Path, uri: str) -> int:
    """Every file under ``folder`` to ``gs://bucket/prefix/<relative path>``."""
    from google.cloud import storage

    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    bucket = storage.Client().bucket(bucket_name)
    n = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        bucket.blob(
            f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}"
        ).upload_from_filename(str(path))
        n += 1
    return n
