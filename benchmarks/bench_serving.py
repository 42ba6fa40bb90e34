"""Serving benchmark: closed-loop load on loopback against the aicrush model server.

    .venv/bin/python benchmarks/bench_serving.py [--model-dir DIR] [--duration 5]
        [--mlserver-python /tmp/mlserver-venv/bin/python]

Load comes from ``wrk`` (one thread, C connections, a Lua script rotating ~1 KB code snippets
from the standard library), in its own process, at concurrency 1, 8 and 32. Compared:

(a) the limit: the same model's batched forward pass in-process (no HTTP) at its best batch size;
(b) the naive KServe predictor: one transformers pipeline() call per request, no batching;
(c) MLServer + mlserver-huggingface with adaptive batching, same model (when installed);
(d) a no-op model through our server vs through MLServer (protocol overhead only).
Also: the fp32 and int8-quantized forward passes, with label agreement against the fp32 eager
TextClassifier (the accuracy-parity figure for each speed option).

Default model: a random-weight model the size of the ``tiny`` preset
(benchmarks/serving/model.py: BERT, 2 layers, hidden 128, max_length 128).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving.model import build_tiny_model, code_snippets  # noqa: E402

CONCURRENCY = (1, 8, 32)


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
    # One intra-op thread everywhere (MLServer included), as our server defaults to: on a
    # shared 2-core machine more threads are much slower (docs/serving.md).
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.update(USE_TF="0", TRANSFORMERS_NO_TF="1")  # MLServer's venv: keep TensorFlow out
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


def wrk(url: str, script: Path, concurrency: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    return json.loads(line[5:])


def load_all(url: str, script: Path, duration: float) -> dict[int, dict[str, float]]:
    wrk(url, script, 8, 1.0)  # warm-up
    return {c: wrk(url, script, c, duration) for c in CONCURRENCY}


def limit_and_parity(model_dir: Path, texts: list[str], seconds: float) -> dict[str, object]:
    """(a): in-process forward passes at several batch sizes, fp32 and int8; label agreement."""
    import torch

    from aicrush.model_folder import TextClassifier
    from aicrush.text_window import crops_of, window_of
    from serving.batching import predict_proba_unpadded
    from serving.predictor import load_torch_model

    reference = TextClassifier.from_dir(model_dir, device="cpu").predict_proba(texts).argmax(1)
    torch.set_num_threads(1)  # as the server does by default (docs/serving.md)
    result: dict[str, object] = {"torch_threads": torch.get_num_threads()}
    for variant, quantize in (("fp32", False), ("int8", True)):
        model, tok, meta = load_torch_model(model_dir, quantize=quantize)
        window, crops = window_of(meta), crops_of(meta)
        probs, _ = predict_proba_unpadded(model, tok, texts, meta["max_length"], 64, window, crops)
        agreement = float((probs.argmax(1) == reference).mean())
        rates = {}
        for bs in (1, 8, 32, 64):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                predict_proba_unpadded(
                    model,
                    tok,
                    texts[:bs] if bs > 1 else texts[n % len(texts) :][:1],
                    meta["max_length"],
                    bs,
                    window,
                    crops,
                )
                n += bs
            rates[bs] = n / (time.perf_counter() - start)
        result[variant] = {"texts_per_s": rates, "label_agreement_vs_fp32_eager": agreement}
    return result


def mlserver_settings(folder: Path, model_dir: Path, port: int, noop: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "host": "127.0.0.1",
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
        settings = {"name": "aicrush", "implementation": "noop_runtime.Noop"}
    else:
        settings = {
            "name": "aicrush",
            "implementation": "mlserver_huggingface.HuggingFaceRuntime",
            "max_batch_size": 32,
            "max_batch_time": 0.005,
            "parameters": {
                "extra": {"task": "text-classification", "pretrained_model": str(model_dir)}
            },
        }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--duration", type=int, default=5, help="seconds per load level")
    ap.add_argument("--mlserver-python", default="/tmp/mlserver-venv/bin/python")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model_dir = args.model_dir or build_tiny_model(work / "model")
    snippets = code_snippets(64, 1024)
    v1 = [json.dumps({"instances": [{"text": t}]}) for t in snippets]
    v2 = [
        json.dumps({"inputs": [{"name": "args", "shape": [1], "datatype": "BYTES", "data": [t]}]})
        for t in snippets
    ]
    v1_lua, v2_lua = lua_script(work / "v1.lua", v1), lua_script(work / "v2.lua", v2)
    py = sys.executable
    results: dict[str, object] = {"model": str(model_dir), "duration_s": args.duration}

    print("(a) in-process forward pass ...", flush=True)
    results["limit"] = limit_and_parity(
        model_dir, code_snippets(256, 1024), min(args.duration, 3.0)
    )

    def ours(module: str, extra: list[str] | None = None) -> dict[int, dict[str, float]]:
        port = free_port()
        cmd = [py, "-m", module, *(extra or [])]
        cmd = [c.replace("{port}", str(port)) for c in cmd]
        with server(cmd, f"http://127.0.0.1:{port}/v2/health/ready", work / f"{module}.log"):
            return load_all(
                f"http://127.0.0.1:{port}/v1/models/aicrush:predict", v1_lua, args.duration
            )

    print("aicrush server ...", flush=True)
    results["aicrush"] = ours("serving.server", ["--model_dir", str(model_dir), "--model_name", "aicrush",
                                                 "--http_port", "{port}", "--grpc_port", str(free_port()),
                                                 "--host", "127.0.0.1"])  # fmt: skip
    print("(b) naive KServe predictor ...", flush=True)
    results["naive"] = ours("benchmarks.serving.naive_server", [str(model_dir), "{port}"])
    print("(d) no-op model through our server ...", flush=True)
    results["noop_aicrush"] = ours("benchmarks.serving.noop_server", [str(model_dir), "{port}"])

    mls = Path(args.mlserver_python)

    def importable(module: str) -> bool:
        if not mls.is_file():
            return False
        env = dict(os.environ, USE_TF="0", TRANSFORMERS_NO_TF="1")
        probe = subprocess.run([str(mls), "-c", f"import {module}"], env=env, capture_output=True)
        return probe.returncode == 0

    for key, noop, module in (
        ("mlserver", False, "mlserver_huggingface"),
        ("noop_mlserver", True, "mlserver"),
    ):
        if not importable(module):
            results[key] = f"not run: {module} does not import with {mls}"
            continue
        print(f"({'d' if noop else 'c'}) MLServer{' no-op' if noop else ''} ...", flush=True)
        port = free_port()
        folder = mlserver_settings(work / key, model_dir, port, noop)
        cmd = [str(mls.parent / "mlserver"), "start", str(folder)]
        ready = f"http://127.0.0.1:{port}/v2/health/ready"
        try:
            with server(cmd, ready, work / f"{key}.log", cwd=folder):
                url = f"http://127.0.0.1:{port}/v2/models/aicrush/infer"
                results[key] = load_all(url, v2_lua, args.duration)
        except (RuntimeError, subprocess.CalledProcessError) as err:
            results[key] = f"not run: {err} (log: {work / (key + '.log')})"

    results["loadavg"] = os.getloadavg()
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))


def print_table(r: dict) -> None:
    limit = r["limit"]
    best_fp32 = max(limit["fp32"]["texts_per_s"].values())
    best_int8 = max(limit["int8"]["texts_per_s"].values())
    print(
        f"\nmodel: {r['model']}  ({r['duration_s']} s per level, torch threads {limit['torch_threads']})"
    )
    print(f"(a) limit, in-process fp32: {best_fp32:.0f} texts/s best "
          f"{ {k: round(v) for k, v in limit['fp32']['texts_per_s'].items()} }; label agreement vs fp32 eager "
          f"{limit['fp32']['label_agreement_vs_fp32_eager']:.4f}")  # fmt: skip
    print(f"    int8 dynamic quantization: {best_int8:.0f} texts/s best ({best_int8 / best_fp32:.2f}x); "
          f"label agreement {limit['int8']['label_agreement_vs_fp32_eager']:.4f}")  # fmt: skip
    rows = [
        k
        for k in ("aicrush", "naive", "mlserver", "noop_aicrush", "noop_mlserver")
        if isinstance(r.get(k), dict)
    ]
    print(
        f"\n{'server':<14}"
        + "".join(f"{'c=' + str(c) + ' rps':>12}{'p99 ms':>9}" for c in CONCURRENCY)
        + "  errors"
    )
    for k in rows:
        cells = "".join(f"{r[k][c]['rps']:>12.0f}{r[k][c]['p99_ms']:>9.1f}" for c in CONCURRENCY)
        errs = sum(r[k][c]["errors"] + r[k][c]["non2xx"] for c in CONCURRENCY)
        print(f"{k:<14}{cells}  {errs}")
    ours = r["aicrush"]
    print("\nratios at c=32:")
    print(f"  aicrush / limit   = {ours[32]['rps'] / best_fp32:.2f}  (target >= 0.85)")
    print(f"  aicrush / naive   = {ours[32]['rps'] / r['naive'][32]['rps']:.2f}  (target >= 4)")
    if isinstance(r.get("mlserver"), dict):
        print(
            f"  aicrush / MLServer = {ours[32]['rps'] / r['mlserver'][32]['rps']:.2f}  (target >= 1.5)"
        )
    else:
        print(f"  MLServer: {r.get('mlserver')}")
    if isinstance(r.get("noop_mlserver"), dict):
        for c in CONCURRENCY:
            ratio = r["noop_aicrush"][c]["rps"] / r["noop_mlserver"][c]["rps"]
            print(f"  no-op aicrush / no-op MLServer at c={c} = {ratio:.2f}")
    else:
        print(f"  no-op MLServer: {r.get('noop_mlserver')}")
    print(f"  aicrush p99 at c=8 = {ours[8]['p99_ms']:.1f} ms  (target <= 100)")
    print(f"load average during the run: {', '.join(f'{x:.2f}' for x in r['loadavg'])}")


if __name__ == "__main__":
    main()
