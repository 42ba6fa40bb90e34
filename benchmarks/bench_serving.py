"""Serving benchmark: closed-loop load on loopback against the aicrush model server and its peers.

    .venv/bin/python benchmarks/bench_serving.py [--model-dir DIR --texts test.parquet]
        [--duration 3] [--mlserver-python /tmp/mlserver-venv/bin/python] [--out results.json]

Model: ``--model-dir`` (a trained model folder, e.g. a run's ``train_model`` output; its ONNX files
are exported into a copy when missing) with ``--texts`` (a parquet file with a ``text`` column,
e.g. the run's ``test.parquet``) for label agreement; by default the ``tiny`` preset trained here
in seconds on the serving tests' small corpus (benchmarks/serving/model.py). Never random weights:
the agreement figures need a model that learned something.

Load: ``wrk`` (one thread, C connections, a Lua script rotating ~1 KB code snippets from the
standard library, V1 REST), in its own process. Measured in one run:

(a) each backend's forward pass in-process (no HTTP; torch fp32 eager, ONNX Runtime fp32, ONNX
    Runtime int8) at batch 1 and 32, 1 and 2 intra-op threads, with label agreement against the
    fp32 eager ``TextClassifier`` on the held-out texts; the limit: the default backend
    in-process at its best batch size, measured again in each round beside the servers;
    our server with the default backend at c = 1, 8, 32, and with the torch backend at c = 32;
(b) the naive KServe predictor: one unbatched ``TextClassifier.predict`` per request;
(c) MLServer with adaptive batching serving the same ONNX file with the same code through its
    custom-runtime API (benchmarks/serving/mlserver_runtime.py, in its own venv), both with
    inference in its server process and with 2 inference worker processes (parallel_workers);
    the better one is the comparator;
(d) a no-op model through our server and through MLServer (protocol overhead only), and
    through KServe's own server with no aicrush code, in the 1-CPU pod;
(e) both cores, at c = 32: our default (one batch worker per core), 1 batch worker, 1 batch
    worker with 2 intra-op threads, 2 server processes (replicas) on a core each with half the
    connections each; and the 1-CPU pod the manifests deploy: the server pinned to core 0 with
    wrk on the other cores (a pod's clients are elsewhere), with and without its access log,
    and called over gRPC instead (KServe's gRPC server, OIP ``ModelInfer``, the same texts;
    benchmarks/serving/grpc_load.py on the other cores), against the in-process limit of 1
    thread on core 0 (``limit_ratio_1cpu``, ``limit_ratio_1cpu_grpc``).

The in-process limit is the default backend called from as many threads as the server has batch
workers, at its best batch size, with no HTTP.

MLServer's venv: ``python3.11 -m venv /tmp/mlserver-venv && /tmp/mlserver-venv/bin/pip install
mlserver onnxruntime==1.32.0 tokenizers==0.23.3 numpy "uvloop<0.22"`` (uvloop 0.22+ kills
MLServer 1.7.1's inference workers, SeldonIO/MLServer#2286).

The servers run on cores 0 and 1 (taskset; the "2-core pod"); wrk runs on the other cores when
the machine has more than 2, else it shares the pod's cores (then the figures are a floor). All
servers are started first and measured in ``--rounds`` interleaved rounds (every server, every
level, then again), and each cell is the median of its rounds: on a shared machine the other
load then falls on every server alike.

Ends with one line for tools:
``RESULT limit_ratio=... naive_ratio=... mlserver_ratio=... onnx_speedup=... agreement=... p99_ms_c8=...
limit_ratio_1cpu=... kserve_ceiling_1cpu=... mlserver_ratio_best=... limit_ratio_1cpu_grpc=...``:
after the issue's keys, the 1-CPU pod against 1 thread's in-process limit with wrk elsewhere; the
most any server on KServe's REST stack could reach there with its access log on (the default),
from KServe's own no-op server on that core (``benchmarks/serving/kserve_noop_server.py``; the
report prints it with the log off too); our best 2-core configuration of (e) against MLServer's
better one; and the 1-CPU pod over gRPC against the same limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving.model import code_snippets, train_tiny_model  # noqa: E402

CONCURRENCY = (1, 8, 32)
TARGET_RPS = 1000  # seed 004: 1,000+ requests/s per pod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready: {url}")


@contextlib.contextmanager
def server(cmd: list[str], ready_url: str, log: Path, cwd: Path = REPO) -> Iterator[None]:
    # OMP_NUM_THREADS=1 for the torch processes (naive, torch backend): the server's own
    # --threads sets its intra-op threads explicitly.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.update(USE_TF="0", TRANSFORMERS_NO_TF="1")
    env["PYTHONPATH"] = str(REPO)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(ready_url, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lua_script(path: Path, bodies: list[str]) -> Path:
    quoted = ",\n".join("[==[" + b + "]==]" for b in bodies)
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{quoted}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("JSON {\\"rps\\": %f, \\"p50_ms\\": %f, \\"p99_ms\\": %f, '
        '\\"errors\\": %d, \\"non2xx\\": %d}\\n", summary.requests / (summary.duration / 1e6), '
        "latency:percentile(50) / 1000, latency:percentile(99) / 1000, "
        "summary.errors.connect + summary.errors.read + summary.errors.write + "
        "summary.errors.timeout, summary.errors.status))\nend\n"
    )
    return path


#: The "pod": our servers run on these cores (taskset); wrk runs on the others when the machine
#: has more than 2 cores, else it shares them (stated with the figures).
POD_CPUS = "0,1"


#: The 1-CPU pod (what the manifests deploy): its server runs on this core, wrk on the others.
ONE_CPU = "0"


def wrk_cmd(url: str, script: Path, concurrency: int, duration: float,
            cpus: str | None = None) -> list[str]:  # fmt: skip
    """wrk on ``cpus`` when given, else on the cores outside the 2-core pod (none on a 2-core
    machine: then it shares the pod's cores)."""
    cores = os.cpu_count() or 1
    if cpus is None and cores > 2:
        cpus = f"2-{cores - 1}"
    pin = ["taskset", "-c", cpus] if cpus else []
    return [*pin, "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
            "--timeout", "10s", "-s", str(script), url]  # fmt: skip


def wrk_result(stdout: str) -> dict[str, float]:
    line = next(x for x in stdout.splitlines() if x.startswith("JSON "))
    return json.loads(line[5:])


def grpc_cmd(target: str, concurrency: int, duration: float, cpus: str | None = None) -> list[str]:
    """The gRPC load client (benchmarks/serving/grpc_load.py) for ``target`` (HOST:PORT), placed
    as :func:`wrk_cmd` places wrk."""
    cores = os.cpu_count() or 1
    if cpus is None and cores > 2:
        cpus = f"2-{cores - 1}"
    pin = ["taskset", "-c", cpus] if cpus else []
    return [*pin, sys.executable, "-m", "benchmarks.serving.grpc_load", target,
            "--concurrency", str(concurrency), "--duration", str(duration)]  # fmt: skip


def wrk_parallel(urls: list[str], script: Path, concurrency: int, duration: float,
                 cpus: str | None = None, grpc: bool = False) -> dict:  # fmt: skip
    """One wrk per URL at the same time, ``concurrency`` connections in all; summed rps, worst p99.
    ``grpc``: the URLs are gRPC HOST:PORTs, loaded by the gRPC client instead of wrk."""
    share = max(1, concurrency // len(urls))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            grpc_cmd(u, share, duration, cpus)
            if grpc
            else wrk_cmd(u, script, share, duration, cpus),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for u in urls
    ]
    outs = [wrk_result(p.communicate()[0]) for p in procs]
    return {
        "rps": sum(o["rps"] for o in outs),
        "p50_ms": max(o["p50_ms"] for o in outs),
        "p99_ms": max(o["p99_ms"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "non2xx": sum(o["non2xx"] for o in outs),
    }


# --------------------------------------------------------------------------- (a) in-process


def pinned_rate(cpus: set[int], *args: object) -> float:
    """:func:`rate` with this thread (the one that runs a 1-thread forward pass) on ``cpus``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return rate(*args)  # type: ignore[arg-type]
    finally:
        os.sched_setaffinity(0, before)


def rate(fn, texts: list[str], batch: int, seconds: float, workers: int = 1) -> float:
    """Texts per second of ``fn(texts[i : i + batch])`` over ``seconds``, called from
    ``workers`` threads at once (as the server's batch workers call it)."""
    import threading

    counts = [0] * workers
    start = time.perf_counter()

    def loop(w: int) -> None:
        i = (w * batch) % len(texts)
        while time.perf_counter() - start < seconds:
            chunk = texts[i : i + batch] or texts[:batch]
            fn(chunk)
            counts[w] += len(chunk)
            i = (i + batch) % len(texts)

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def in_process(model_dir: Path, agree_texts: list[str], load: list[str], seconds: float) -> dict:
    """Each backend's texts/s at batch 1 and 32, 1 and 2 threads; label agreement vs fp32 eager."""
    import torch

    from aicrush.model_folder import TextClassifier
    from serving.predictor import load_backend

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0, 1} & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    torch.set_num_threads(1)
    eager = TextClassifier.from_dir(model_dir, device="cpu")
    reference = eager.predict_proba(agree_texts).argmax(1)
    out: dict[str, dict] = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        out[backend] = {"texts_per_s": {}}
        for threads in (1, 2):
            b = load_backend(model_dir, backend, threads=threads)
            if threads == 1:
                probs, _ = b.forward(agree_texts)
                out[backend]["agreement"] = float((probs.argmax(1) == reference).mean())
            for batch in (1, 32):
                key = f"t{threads}_b{batch}"
                out[backend]["texts_per_s"][key] = rate(b.forward, load, batch, seconds)
        torch.set_num_threads(1)
    return out


# --------------------------------------------------------------------------- servers


def our_cmd(model_dir: Path, port: int, backend: str, threads: int, cpus: str | None,
            batch_workers: int = 0, grpc_port: int | None = None) -> list[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "serving.server", "--model_dir", str(model_dir),
           "--model_name", "aicrush", "--http_port", str(port),
           "--grpc_port", str(grpc_port or free_port()),
           "--host", "127.0.0.1", "--backend", backend, "--threads", str(threads),
           "--batch_workers", str(batch_workers)]  # fmt: skip
    return (["taskset", "-c", cpus] if cpus else []) + cmd


@dataclass
class Target:
    """A server under test: its URL(s) (several: replicas, load split between them), the body
    script, the concurrency levels it is measured at and the cores wrk runs on."""

    urls: list[str]
    script: Path
    levels: tuple[int, ...] = CONCURRENCY
    wrk_cpus: str | None = None  # where wrk runs (None: wrk_cmd's default)
    grpc: bool = False  # urls are gRPC HOST:PORTs, loaded by benchmarks/serving/grpc_load.py


def start_ours(stack: contextlib.ExitStack, work: Path, name: str, model_dir: Path, backend: str,
               threads: int = 1, cpus: str | None = POD_CPUS, batch_workers: int = 0,
               extra: tuple[str, ...] = (), grpc_port: int | None = None) -> str:  # fmt: skip
    """Our server (``batch_workers`` 0: its default, one per CPU it may use)."""
    port = free_port()
    cmd = our_cmd(model_dir, port, backend, threads, cpus, batch_workers, grpc_port) + list(extra)
    stack.enter_context(server(cmd, ready(port), work / f"{name}.log"))
    return predict_url(port)


PORT = "{port}"  # start_module's placeholder for the port it picks
KSERVE_NOOP = "benchmarks.serving.kserve_noop_server"


def start_module(stack: contextlib.ExitStack, work: Path, module: str, *args: object,
                 cpus: str | None = None) -> str:  # fmt: skip
    """``python -m module args...`` on ``cpus``, an arg ``PORT`` replaced by a free port."""
    port = free_port()
    argv = [str(port) if a == PORT else str(a) for a in args]
    cmd = (["taskset", "-c", cpus] if cpus else []) + [sys.executable, "-m", module, *argv]
    stack.enter_context(server(cmd, ready(port), work / f"{module}-{port}.log"))
    return predict_url(port)


def measure_rounds(
    targets: dict[str, Target], duration: float, rounds: int, limits: dict[str, Callable[[], float]]
) -> dict:
    """Every target at every level, ``rounds`` times, round-robin (so a change in the machine's
    other load falls on all servers alike); per level the median rps and the median p99.
    Each of ``limits`` (in-process forward passes, texts/s) runs in each round too: its key."""
    for t in targets.values():
        wrk_parallel(t.urls, t.script, 8, 1.0, t.wrk_cpus, t.grpc)  # warm-up
    raw: dict[str, dict[int, list[dict]]] = {
        k: {c: [] for c in t.levels} for k, t in targets.items()
    }
    measured: dict[str, list[float]] = {k: [] for k in limits}
    for _ in range(rounds):
        for key, limit in limits.items():
            measured[key].append(limit())
        for name, t in targets.items():
            for c in t.levels:
                raw[name][c].append(wrk_parallel(t.urls, t.script, c, duration, t.wrk_cpus, t.grpc))
    out: dict = {}
    for name, levels in raw.items():
        out[name] = {}
        for c, runs in levels.items():
            out[name][c] = {
                "rps": statistics.median(x["rps"] for x in runs),
                "p50_ms": statistics.median(x["p50_ms"] for x in runs),
                "p99_ms": statistics.median(x["p99_ms"] for x in runs),
                "errors": sum(x["errors"] for x in runs),
                "non2xx": sum(x["non2xx"] for x in runs),
                "rounds_rps": [round(x["rps"], 1) for x in runs],
            }
    for key, values in measured.items():
        out[key] = {"texts_per_s": statistics.median(values), "rounds": values}
    return out


def ready(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/health/ready"


def predict_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/models/aicrush:predict"


def mlserver_settings(folder: Path, model_dir: Path, port: int, noop: bool, backend: str,
                      parallel_workers: int = 0) -> Path:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": parallel_workers, "host": "127.0.0.1",
    }))  # fmt: skip
    if noop:
        (folder / "noop_runtime.py").write_text(
            "from mlserver import MLModel\n"
            "from mlserver.types import InferenceResponse, ResponseOutput\n"
            "class Noop(MLModel):\n"
            "    async def load(self):\n        return True\n"
            "    async def predict(self, payload):\n"
            "        n = payload.inputs[0].shape[0]\n"
            "        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(\n"
            "            name='label', shape=[n], datatype='BYTES', data=['noop'] * n)])\n"
        )
        settings: dict = {"name": "aicrush", "implementation": "noop_runtime.Noop"}
    else:
        settings = {
            "name": "aicrush",
            "implementation": "benchmarks.serving.mlserver_runtime.AicrushOnnxRuntime",
            # MLServer's adaptive batching: up to 32 requests, waiting up to 2 ms for them.
            "max_batch_size": 32,
            "max_batch_time": 0.002,
            "parameters": {
                "extra": {"model_dir": str(model_dir), "backend": backend, "threads": 1}
            },
        }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def start_mlserver(stack: contextlib.ExitStack, work: Path, mls: Path, model_dir: Path,
                   noop: bool, backend: str, parallel_workers: int = 0) -> str:  # fmt: skip
    """Start MLServer (its own venv) and return its V2 infer URL; RuntimeError with the reason
    when it cannot run. ``parallel_workers``: MLServer's inference pool (0: inference in the
    server process; N: N worker processes, each with its own copy of the model)."""
    key = "noop_mlserver" if noop else f"mlserver_pw{parallel_workers}"
    probe = subprocess.run(
        [str(mls), "-c", "import mlserver, onnxruntime, tokenizers"], capture_output=True
    )
    if not mls.is_file() or probe.returncode != 0:
        raise RuntimeError(f"mlserver, onnxruntime and tokenizers do not import with {mls}")
    port = free_port()
    folder = mlserver_settings(work / key, model_dir, port, noop, backend, parallel_workers)
    cmd = ["taskset", "-c", POD_CPUS, str(mls.parent / "mlserver"), "start", str(folder)]
    try:
        stack.enter_context(server(cmd, ready(port), work / f"{key}.log", cwd=folder))
    except RuntimeError as err:
        raise RuntimeError(f"{err} (log: {work / (key + '.log')})") from err
    return f"http://127.0.0.1:{port}/v2/models/aicrush/infer"


# --------------------------------------------------------------------------- main


def prepare_model(args: argparse.Namespace, work: Path) -> tuple[Path, list[str]]:
    """A copy of the model folder with its ONNX files, and the texts for label agreement."""
    import pandas as pd

    from serving.onnx_backend import ONNX_FILES, export_onnx

    if args.model_dir is None:
        model_dir, texts = train_tiny_model(work / "trained")
    else:
        model_dir = work / "model"
        shutil.copytree(args.model_dir, model_dir)
        texts = pd.read_parquet(args.texts)["text"].tolist() if args.texts else code_snippets(256)
    if not all((model_dir / f).is_file() for f in ONNX_FILES.values()):
        export_onnx(model_dir)
    return model_dir, texts[: args.max_texts]


def phase(r: dict, name: str) -> None:
    """Print the phase and record the load average as it starts (the machine may be shared)."""
    r["loadavg"][name] = os.getloadavg()
    print(f"{name} ... (load average {r['loadavg'][name][0]:.2f})", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-dir", type=Path, default=None, help="a trained model folder")
    ap.add_argument("--texts", type=Path, default=None, help="parquet with a 'text' column")
    ap.add_argument("--max-texts", type=int, default=2000, help="texts for label agreement")
    ap.add_argument("--duration", type=int, default=2, help="seconds per load level and round")
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians are reported"
    )
    ap.add_argument(
        "--mlserver-python",
        default="/tmp/mlserver-venv/bin/python",
        help="python of MLServer's own venv (see above); MLServer is skipped when it cannot run",
    )
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    from aicrush.config import ServingConfig

    backend = ServingConfig().backend  # the default: what registration records
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    started = time.monotonic()
    print("model ...", flush=True)
    model_dir, agree_texts = prepare_model(args, work)
    snippets = code_snippets(64, 1024)
    v1 = [json.dumps({"instances": [{"text": t}]}) for t in snippets]
    v2 = [
        json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]})
        for t in snippets
    ]
    v1_lua, v2_lua = lua_script(work / "v1.lua", v1), lua_script(work / "v2.lua", v2)
    d = args.duration
    r: dict = {"model": str(args.model_dir or model_dir), "duration_s": d, "backend": backend,
               "agreement_texts": len(agree_texts), "loadavg": {"start": os.getloadavg()}}  # fmt: skip

    phase(r, "(a) in-process forward passes")
    r["in_process"] = in_process(model_dir, agree_texts, code_snippets(256, 1024), min(d, 2.0))
    phase(r, "starting the servers")
    mls = Path(args.mlserver_python)
    # wrk beside the 1-CPU pod: on the other cores (none on a 1-core machine: then it shares the
    # pod's core, and the report says so).
    other_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if str(c) != ONE_CPU)
    r["one_cpu_wrk"] = other_cpus or None
    with contextlib.ExitStack() as stack:
        t: dict[str, Target] = {
            "aicrush": Target([start_ours(stack, work, "aicrush", model_dir, backend)], v1_lua),
            "aicrush_torch": Target(
                [start_ours(stack, work, "aicrush_torch", model_dir, "torch")], v1_lua, (32,)
            ),
            "naive": Target(
                [start_module(stack, work, "benchmarks.serving.naive_server", model_dir, PORT)],
                v1_lua,
            ),
            "noop_aicrush": Target(
                [start_module(stack, work, "benchmarks.serving.noop_server", model_dir, PORT)],
                v1_lua,
            ),
            "one_worker": Target(
                [start_ours(stack, work, "one_worker", model_dir, backend, batch_workers=1)],
                v1_lua,
                (32,),
            ),
            "threads2": Target(
                [
                    start_ours(
                        stack, work, "threads2", model_dir, backend, threads=2, batch_workers=1
                    )
                ],
                v1_lua,
                (32,),
            ),
            # 2 processes, one core each (as two 1-CPU pods), the connections split between them
            "replicas2": Target(
                [
                    start_ours(stack, work, f"replica{i}", model_dir, backend, cpus=str(i))
                    for i in range(2)
                ],
                v1_lua,
                (32,),
            ),
            # The 1-CPU pod the manifests deploy, with wrk on the other cores (as a pod's clients
            # are elsewhere): what the server's own work costs against the 1-thread limit.
            "one_core": Target(
                [start_ours(stack, work, "one_core", model_dir, backend, cpus=ONE_CPU)],
                v1_lua,
                (32,),
                wrk_cpus=other_cpus,
            ),
            # KServe's own server alone (no aicrush code) with a no-op model, in the same pod:
            # the per-request cost of its REST stack, which bounds what any server built on it
            # can reach against the limit.
            "kserve_noop_one_core": Target(
                [start_module(stack, work, KSERVE_NOOP, PORT, cpus=ONE_CPU)],
                v1_lua,
                (32,),
                wrk_cpus=other_cpus,
            ),
            "noop_aicrush_one_core": Target(
                [
                    start_module(
                        stack, work, "benchmarks.serving.noop_server", model_dir, PORT, cpus=ONE_CPU
                    )
                ],
                v1_lua,
                (32,),
                wrk_cpus=other_cpus,
            ),
            "kserve_noop_one_core_quiet": Target(
                [
                    start_module(
                        stack, work, KSERVE_NOOP, PORT, "--enable_access_log", "false", cpus=ONE_CPU
                    )
                ],
                v1_lua,
                (32,),
                wrk_cpus=other_cpus,
            ),
            "one_core_quiet": Target(
                [
                    start_ours(
                        stack,
                        work,
                        "one_core_quiet",
                        model_dir,
                        backend,
                        cpus=ONE_CPU,
                        extra=("--enable_access_log", "false"),
                    )
                ],
                v1_lua,
                (32,),
                wrk_cpus=other_cpus,
            ),
        }
        # The same 1-CPU pod called over gRPC (KServe's gRPC server, the Open Inference
        # Protocol's ModelInfer), the same texts, the gRPC client on the other cores.
        grpc_port = free_port()
        start_ours(stack, work, "one_core_grpc", model_dir, backend, cpus=ONE_CPU,
                   grpc_port=grpc_port)  # fmt: skip
        t["one_core_grpc"] = Target(
            [f"127.0.0.1:{grpc_port}"], v1_lua, (32,), wrk_cpus=other_cpus, grpc=True
        )
        # MLServer in its two ways of using a 2-core pod: inference in the server process, and
        # 2 inference worker processes (its parallel_workers); the better one is the comparator.
        for key, noop, workers in (("mlserver", False, 0), ("mlserver_pw2", False, 2),
                                   ("noop_mlserver", True, 0)):  # fmt: skip
            try:
                url = start_mlserver(stack, work, mls, model_dir, noop, backend, workers)
                t[key] = Target([url], v2_lua, CONCURRENCY if workers == 0 else (8, 32))
            except RuntimeError as err:
                r[key] = f"not run: {err}"
        from serving.batching import available_cpus
        from serving.predictor import load_backend

        limit_backend = load_backend(model_dir, backend, threads=1)
        load_texts = code_snippets(256, 1024)
        workers = available_cpus()  # this process runs on cores 0-1: what the server defaults to
        r["batch_workers"] = workers

        def limit() -> float:
            # The same backend in this process (cores 0-1), called from as many threads as the
            # server has batch workers, at its best batch size: no HTTP, no queue.
            return max(rate(limit_backend.forward, load_texts, b, d, workers) for b in (1, 32))

        def limit_one_cpu() -> float:
            # One thread on the 1-CPU pod's core, at its best batch size.
            one = {int(ONE_CPU)}
            return max(pinned_rate(one, limit_backend.forward, load_texts, b, d) for b in (1, 32))

        phase(r, f"(a)-(e) servers under load, {args.rounds} interleaved rounds")
        r.update(
            measure_rounds(t, d, args.rounds, {"limit": limit, "limit_one_cpu": limit_one_cpu})
        )
    r["loadavg"]["end"] = os.getloadavg()
    r["wall_s"] = time.monotonic() - started
    summary = summarize(r)
    r["summary"] = summary
    print_report(r, summary)
    if args.out:
        args.out.write_text(json.dumps(r, indent=2, default=str))
    keys = ("limit_ratio", "naive_ratio", "mlserver_ratio", "onnx_speedup", "agreement")
    fields = [f"{k}={summary[k]:.3f}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
              for k in keys]  # fmt: skip
    print("RESULT " + " ".join(fields) + f" p99_ms_c8={summary['p99_ms_c8']:.1f}"
          f" limit_ratio_1cpu={summary['limit_ratio_1cpu']:.3f}"
          f" kserve_ceiling_1cpu={summary['kserve_ceiling_1cpu']:.3f}"
          f" mlserver_ratio_best={summary['mlserver_ratio_best']:.3f}"
          f" limit_ratio_1cpu_grpc={summary['limit_ratio_1cpu_grpc']:.3f}")  # fmt: skip


def best(rates: dict[str, float], threads: int = 1) -> float:
    return max(v for k, v in rates.items() if k.startswith(f"t{threads}_"))


def ceiling(r: dict, noop: str) -> float:
    """The most a server adding nothing to KServe's per-request cost could reach against the
    1-thread limit: 1 / (1 + limit x KServe's seconds a request), from KServe's no-op server on
    the same core (nan if it served nothing)."""
    rps = r[noop][32]["rps"]
    return 1 / (1 + r["limit_one_cpu"]["texts_per_s"] / rps) if rps else float("nan")


def summarize(r: dict) -> dict:
    ip = r["in_process"]
    backend = r["backend"]
    limit = r["limit"]["texts_per_s"]  # measured in the same rounds as the servers
    ours32 = r["aicrush"][32]["rps"]
    peers = {k: r[k][32]["rps"] for k in ("mlserver", "mlserver_pw2") if isinstance(r.get(k), dict)}
    mls_best = max(peers.values()) if peers else float("nan")
    two_core = {
        f"1 process, {r['batch_workers']} batch workers x 1 thread (default)": ours32,
        "1 process, 1 batch worker x 1 thread": r["one_worker"][32]["rps"],
        "1 process, 1 batch worker x 2 threads": r["threads2"][32]["rps"],
        "2 processes, 1 core each": r["replicas2"][32]["rps"],
    }
    best_2 = max(two_core.values())
    return {
        "limit_texts_per_s": limit,
        "limit_ratio": ours32 / limit,
        "naive_ratio": ours32 / r["naive"][32]["rps"],
        "mlserver_ratio": ours32 / mls_best if peers else "nan",
        "mlserver_best": max(peers, key=peers.get) if peers else "not run",
        "onnx_speedup": best(ip[backend]["texts_per_s"]) / best(ip["torch"]["texts_per_s"]),
        "server_speedup_vs_torch": ours32 / r["aicrush_torch"][32]["rps"],
        "agreement": ip[backend]["agreement"],
        "p99_ms_c8": r["aicrush"][8]["p99_ms"],
        "two_core": two_core,
        "best_two_core": max(two_core, key=two_core.get),
        "rps_two_core_pod": best_2,
        # Both sides in their better 2-core configuration (ours: the best of (e)).
        "mlserver_ratio_best": best_2 / mls_best if peers else float("nan"),
        "rps_one_core": r["one_core"][32]["rps"],
        "rps_one_core_quiet": r["one_core_quiet"][32]["rps"],
        "limit_one_cpu_texts_per_s": r["limit_one_cpu"]["texts_per_s"],
        "limit_ratio_1cpu": r["one_core"][32]["rps"] / r["limit_one_cpu"]["texts_per_s"],
        "limit_ratio_1cpu_grpc": r["one_core_grpc"][32]["rps"] / r["limit_one_cpu"]["texts_per_s"],
        # A server that adds nothing to KServe's per-request cost (its no-op rps on the same
        # core) and batches perfectly: 1 / (1 + limit x KServe's seconds per request).
        "kserve_ceiling_1cpu": ceiling(r, "kserve_noop_one_core"),
        "kserve_ceiling_1cpu_quiet": ceiling(r, "kserve_noop_one_core_quiet"),
        "cores_for_target": 2 * TARGET_RPS / best_2,
        "pods_for_target": math.ceil(TARGET_RPS / best_2),
    }


def print_report(r: dict, s: dict) -> None:
    ip = r["in_process"]
    print(f"\nmodel: {r['model']}  ({r['duration_s']} s per level; agreement on "
          f"{r['agreement_texts']} held-out texts vs fp32 eager TextClassifier)")  # fmt: skip
    print(f"\n(a) in-process texts/s (~1 KB snippets)  {'t1 b1':>8}{'t1 b32':>8}{'t2 b1':>8}"
          f"{'t2 b32':>8}  agreement")  # fmt: skip
    for name, v in ip.items():
        t = v["texts_per_s"]
        cells = "".join(f"{t[k]:>8.0f}" for k in ("t1_b1", "t1_b32", "t2_b1", "t2_b32"))
        print(f"    {name:<36}{cells}  {v['agreement']:.4f}")
    rows = [("aicrush", f"aicrush ({r['backend']})"), ("aicrush_torch", "aicrush (torch)"),
            ("naive", "(b) naive"), ("mlserver", f"(c) MLServer ({r['backend']})"),
            ("mlserver_pw2", "(c) MLServer, 2 workers"), ("one_worker", "(e) 1 batch worker"),
            ("noop_aicrush", "(d) no-op aicrush"), ("noop_mlserver", "(d) no-op MLServer"),
            ("threads2", "(e) 1 worker x 2 threads"), ("replicas2", "(e) 2 processes"),
            ("one_core", "(e) 1-CPU pod"), ("one_core_quiet", "(e) 1-CPU pod, no access log"),
            ("one_core_grpc", "(e) 1-CPU pod, gRPC"),
            ("noop_aicrush_one_core", "(d) no-op aicrush, 1 CPU"),
            ("kserve_noop_one_core", "(d) no-op KServe, 1 CPU"),
            ("kserve_noop_one_core_quiet", "(d) no-op KServe, 1 CPU, no access log")]  # fmt: skip
    print(f"\n{'server':<26}" + "".join(f"{'c=' + str(c) + ' rps':>12}{'p99 ms':>9}" for c in CONCURRENCY) + "  errors")  # fmt: skip
    for key, label in rows:
        v = r.get(key)
        if not isinstance(v, dict):
            print(f"{label:<26}{v}")
            continue
        cells = "".join(
            f"{v[c]['rps']:>12.0f}{v[c]['p99_ms']:>9.1f}" if c in v else f"{'':>21}"
            for c in CONCURRENCY
        )
        errs = sum(v[c]["errors"] + v[c]["non2xx"] for c in v)
        print(f"{label:<26}{cells}  {errs}")
    print("\nratios (c=32):")
    print(f"  aicrush / in-process limit ({s['limit_texts_per_s']:.0f} texts/s, {r['batch_workers']} threads) = {s['limit_ratio']:.2f}  (target >= 0.85)")  # fmt: skip
    print(f"  aicrush / naive             = {s['naive_ratio']:.2f}  (target >= 4)")
    mr = s["mlserver_ratio"]
    print(f"  aicrush / MLServer          = {mr if isinstance(mr, str) else f'{mr:.2f}'}  (target >= 1.5; "
          f"MLServer's better configuration: {s['mlserver_best']})")  # fmt: skip
    print(f"    both in their better 2-core configuration ({s['best_two_core']} / "
          f"{s['mlserver_best']}) = {s['mlserver_ratio_best']:.2f}")  # fmt: skip
    print(f"  {r['backend']} / torch fp32, in-process = {s['onnx_speedup']:.2f}  (target >= 2), "
          f"server = {s['server_speedup_vs_torch']:.2f}; agreement {s['agreement']:.4f} (target >= 0.995)")  # fmt: skip
    print(f"  p99 at c=8 = {s['p99_ms_c8']:.1f} ms  (target <= 100)")
    wrk_where = "wrk on the others" if r.get("one_cpu_wrk") else "wrk SHARING it: no other core"
    print(f"  1-CPU pod (core {ONE_CPU}, {wrk_where}) / in-process limit "
          f"({s['limit_one_cpu_texts_per_s']:.0f} texts/s, 1 thread on that core) = "
          f"{s['limit_ratio_1cpu']:.2f}; with --enable_access_log false "
          f"{s['rps_one_core_quiet'] / s['limit_one_cpu_texts_per_s']:.2f}; over gRPC "
          f"{s['limit_ratio_1cpu_grpc']:.2f}")  # fmt: skip
    ours, theirs = r["noop_aicrush_one_core"][32]["rps"], r["kserve_noop_one_core"][32]["rps"]
    if ours and theirs:
        print(f"    aicrush's own cost a request over KServe's (no-op servers on that core): "
              f"{1e3 / ours - 1e3 / theirs:.3f} ms")  # fmt: skip
    for key, quiet in (("kserve_noop_one_core", ""), ("kserve_noop_one_core_quiet", "_quiet")):
        rps = r[key][32]["rps"]
        print(f"    ceiling for any server on KServe's REST stack there"
              f"{', no access log' if quiet else ''}: {s['kserve_ceiling_1cpu' + quiet]:.2f} "
              f"(its no-op server: {rps:.0f} rps on that core, "
              f"{1e3 / rps if rps else float('nan'):.3f} ms a request)")  # fmt: skip
    shared = "wrk on the same cores" if (os.cpu_count() or 1) <= 2 else "wrk on other cores"
    print(f"\npod size: one 2-core pod (cores {POD_CPUS}, {shared}) serves {s['rps_two_core_pod']:.0f} rps "
          f"({s['best_two_core']}); pinned to 1 core {s['rps_one_core']:.0f} rps.")  # fmt: skip
    print(f"  {TARGET_RPS} rps, scaling by replicas (linear, stated not measured beyond 2 cores): "
          f"{s['cores_for_target']:.1f} cores = {s['pods_for_target']} pods of 2 cores")  # fmt: skip
    la = r["loadavg"]
    print("load average (1 min) at each phase: " + "; ".join(f"{k} {v[0]:.2f}" for k, v in la.items())
          + f"; wall {r['wall_s']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
