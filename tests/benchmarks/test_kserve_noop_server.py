"""benchmarks/serving/kserve_noop_server.py: the KServe-only baseline of bench_serving's (d)
runs as documented and logs what aicrush's server logs (no kserve.trace lines)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving import REPO_ROOT, free_port


def _serve_and_log(tmp_path: Path, *extra: str) -> str:
    port = free_port()
    log = tmp_path / f"noop-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "benchmarks.serving.kserve_noop_server", str(port), *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not ready in 60 s"
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        body = b'{"instances": [{"text": "x"}, "y"]}'
        for headers in ({"Content-Type": "application/json"}, {}):  # wrk's, and curl -d's
            r = httpx.post(url + "/v1/models/aicrush:predict", content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json() == {"predictions": [{"label": "noop", "score": 1.0}] * 2}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return log.read_text(errors="replace")


@pytest.mark.parametrize("flag", [None, "true", "false"])
def test_noop_server_answers_and_logs_like_aicrush(tmp_path: Path, flag: str | None) -> None:
    log = _serve_and_log(tmp_path, *(["--enable_access_log", flag] if flag else []))
    assert "Traceback" not in log, log[-3000:]
    assert "kserve.trace" not in log, log[-3000:]
    access = [x for x in log.splitlines() if "uvicorn.access" in x and '"POST /v1/' in x]
    assert len(access) == (0 if flag == "false" else 2), log[-3000:]
