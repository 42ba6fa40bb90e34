"""benchmarks/serving/grpc_load.py: the gRPC load client of bench_serving's 1-CPU pod row counts
answered calls against the real model server, and stops with the server's status, not a
figure, when its calls are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import REPO_ROOT, RunningServer, shared_server


@pytest.fixture(scope="module")
def server(
    random_model_dir: Path, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def _load(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "benchmarks.serving.grpc_load", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_counts_answered_model_infer_calls(server: RunningServer) -> None:
    out = _load(server.grpc_url, "--model", server.name, "--concurrency", "4", "--duration", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("JSON "))
    result = json.loads(line[5:])
    assert result["errors"] == 0 and result["non2xx"] == 0
    assert result["rps"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]


def test_refused_calls_end_the_run_with_the_status(server: RunningServer) -> None:
    out = _load(server.grpc_url, "--model", "no-such-model", "--duration", "1")
    assert out.returncode != 0
    assert "NOT_FOUND" in out.stderr and "no-such-model" in out.stderr, out.stderr[-3000:]
    assert "JSON " not in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["--concurrency", "0"], ["--duration", "0"]])
def test_bad_settings_are_usage_errors(args: list[str]) -> None:
    out = _load("127.0.0.1:1", *args)
    assert out.returncode == 2 and "must be" in out.stderr
