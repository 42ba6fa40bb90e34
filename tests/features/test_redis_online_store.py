"""The Feast Redis online store (what the cluster uses) against a real redis-server on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from aicrush.config import FeaturesConfig
from features import store as fs
from features.file_features import FEATURE_NAMES, compute_file_features
from tests.features.test_store import IDS, TEXTS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server not installed (Debian package redis-server; .ci/run installs it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory):
    import redis

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=15)


def test_materialized_features_are_served_from_redis(tmp_path: Path, redis_port: int) -> None:
    import redis

    cfg = FeaturesConfig(
        project="aicrush_redis",
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{redis_port}",
    )
    repo = fs.prepare_repo(tmp_path / "feast", cfg)
    t0 = fs.utc_now()
    fs.write_offline_source(repo, fs.feature_rows(IDS, TEXTS, t0))
    store = fs.open_store(repo)
    assert store.config.online_store.type == "redis"
    fs.apply_definitions(store)
    fs.materialize(store, t0 - timedelta(seconds=1), t0 + timedelta(seconds=1))

    assert redis.Redis(host="127.0.0.1", port=redis_port).dbsize() >= len(IDS)  # it really wrote
    frame = fs.online_features(store, [*IDS, "0" * 64])
    values = frame.iloc[: len(IDS)][list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(values, compute_file_features(TEXTS).to_numpy())
    assert frame.iloc[-1][list(FEATURE_NAMES)].isna().all()  # an unknown file has no features
