"""Training checkpoints mirrored to the pipeline's artifact store, so a retried pod resumes.

In the cluster a KFP task's output paths are on the pod's own disk (uploaded only when the task
succeeds): checkpoints written there die with the pod. :class:`CheckpointMirror` keeps a copy
of the local checkpoint folder under a ``gs://`` prefix (or any local folder, for tests): it
restores the copy before training (:meth:`CheckpointMirror.restore`) and uploads what changed
each time ``transformers.Trainer`` has saved a checkpoint (:meth:`CheckpointMirror.push`, called
from ``components.train_model``'s ``on_save`` callback, so the upload follows Trainer's saves
rather than a timer).

A checkpoint folder (``checkpoint-<step>/``, Trainer's layout) counts as complete once its
:data:`COMPLETE_MARKER` exists: ``train_model`` writes it after every process has finished its
part of the save. The mirror uploads the marker last, so a half-uploaded checkpoint is never taken
for a resumable one; other folders (``tokenizer/``) are uploaded as they are.

Missing or refused Google credentials are a :class:`~aicrush.errors.CredentialsError` naming the
``gs://`` prefix, wherever the store is reached (list, download, upload, delete). Unlike a failed
upload, which the next save retries, it is not transient (google.auth has already retried the
token refresh), so the callers let it stop training.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from aicrush.errors import google_credentials

log = logging.getLogger(__name__)

#: Written last in each complete checkpoint folder (``components.train_model``; it holds the
#: fingerprint of the config and data the checkpoint belongs to).
COMPLETE_MARKER = "aicrush_checkpoint.json"
#: Trainer's checkpoint folders: ``checkpoint-<global step>`` (transformers' PREFIX_CHECKPOINT_DIR).
CHECKPOINT_PREFIX = "checkpoint-"


def checkpoint_uri_for(features_uri: str) -> str:
    """``<pipeline_root>/<run>/checkpoints/train_model`` for an input artifact at
    ``<pipeline_root>/<run>/<task>/<artifact>`` in object storage; "" for a local path.

    The features artifact is the same for every attempt of the train task, so every retry finds
    the same prefix.
    """
    if not features_uri.startswith("gs://"):
        return ""
    run = features_uri.rstrip("/").rsplit("/", 2)[0]
    return f"{run}/checkpoints/train_model"


class _Store:
    """The remote side: a ``gs://bucket/prefix`` or a local folder."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._bucket: Any = None
        if self.uri.startswith("gs://"):
            bucket, _, prefix = self.uri[len("gs://") :].partition("/")
            self.bucket_name, self.prefix = bucket, prefix.strip("/")
        else:
            self.root = Path(self.uri.removeprefix("file://"))

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            from aicrush.gcs import storage_client

            self._bucket = storage_client(self.uri).bucket(self.bucket_name)
        return self._bucket

    def list(self) -> list[str]:
        """Relative paths of the stored files."""
        if not self.uri.startswith("gs://"):
            if not self.root.is_dir():
                return []
            return [
                p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
            ]
        with google_credentials(self.uri):
            names = self.bucket.client.list_blobs(self.bucket_name, prefix=self.prefix + "/")
            return [b.name[len(self.prefix) + 1 :] for b in names]

    def get(self, rel: str, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.uri.startswith("gs://"):
            with google_credentials(self.uri):
                self.bucket.blob(f"{self.prefix}/{rel}").download_to_filename(str(dst))
        else:
            shutil.copyfile(self.root / rel, dst)

    def put(self, src: Path, rel: str) -> None:
        if self.uri.startswith("gs://"):
            with google_credentials(self.uri):
                self.bucket.blob(f"{self.prefix}/{rel}").upload_from_filename(str(src))
        else:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self.root / rel)

    def delete(self, rel: str) -> None:
        """Remove one object; one already gone is fine (idempotent)."""
        if self.uri.startswith("gs://"):
            from google.api_core.exceptions import NotFound

            with contextlib.suppress(NotFound), google_credentials(self.uri):
                self.bucket.blob(f"{self.prefix}/{rel}").delete()
        else:
            (self.root / rel).unlink(missing_ok=True)


class CheckpointMirror:
    """Restore checkpoints from ``remote_uri`` into ``local_dir``; upload complete ones back.

    ``components.train_model.train`` calls :meth:`restore` once before training (on each node's
    first process) and :meth:`push` after each of Trainer's saves (on the first process of the
    job), so a checkpoint is durable before training goes on. ``with CheckpointMirror(...)``
    restores on entry and pushes once more on exit.

    Args:
        remote_uri: ``gs://bucket/prefix`` (google-cloud-storage; honours STORAGE_EMULATOR_HOST)
            or a local folder.
        local_dir: the folder training writes checkpoints to (``checkpoint-*/``, ``tokenizer/``).
    Raises:
        aicrush.errors.CredentialsError: no Google credentials for a ``gs://`` store, or
        refused ones.
        google.api_core.exceptions.GoogleAPIError: the store cannot be read or written (a
        retried pod must not silently start from zero).
    """

    def __init__(self, remote_uri: str, local_dir: Path):
        self.store = _Store(remote_uri)
        self.local = Path(local_dir)
        self._uploaded: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns)
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.store.uri

    def restore(self) -> int:
        """Download the mirrored checkpoints; returns the number of files fetched.

        The store is the truth: a local checkpoint folder the store does not hold (left in a
        reused node-local folder by another run or config) is deleted first, so training never
        resumes from a checkpoint that is not durable.
        """
        names = self.store.list()
        held = {rel.split("/", 1)[0] for rel in names}
        if self.local.is_dir():
            for folder in self.local.iterdir():
                if (
                    folder.is_dir()
                    and folder.name.startswith(CHECKPOINT_PREFIX)
                    and folder.name not in held
                ):
                    log.info("dropping local %s: not in %s", folder.name, self.store.uri)
                    shutil.rmtree(folder)
        for rel in sorted(names, key=lambda r: r.endswith(COMPLETE_MARKER)):  # markers last
            dst = self.local / rel
            self.store.get(rel, dst)
            st = dst.stat()
            self._uploaded[rel] = (st.st_size, st.st_mtime_ns)
        if names:
            log.info("restored %d checkpoint files from %s", len(names), self.store.uri)
        return len(names)

    def push(self) -> int:
        """Upload what changed since the last push (complete checkpoints only, each marker
        last) and delete what training pruned; returns the number of files sent."""
        with self._lock:
            sent = 0
            if not self.local.is_dir():
                return 0
            present: set[str] = set()
            for folder in sorted(p for p in self.local.iterdir() if p.is_dir()):
                is_checkpoint = folder.name.startswith(CHECKPOINT_PREFIX)
                if is_checkpoint and not (folder / COMPLETE_MARKER).is_file():
                    continue  # being written, or cut short by a kill
                files = sorted(
                    (p for p in folder.rglob("*") if p.is_file()),
                    key=lambda p: p.name == COMPLETE_MARKER,
                )
                for path in files:
                    rel = path.relative_to(self.local).as_posix()
                    present.add(rel)
                    try:
                        st = path.stat()
                    except FileNotFoundError:  # pruned meanwhile
                        continue
                    if self._uploaded.get(rel) != (st.st_size, st.st_mtime_ns):
                        self.store.put(path, rel)
                        self._uploaded[rel] = (st.st_size, st.st_mtime_ns)
                        sent += 1
            # Stale markers first: a checkpoint whose marker is gone is never taken as complete.
            stale = sorted(
                (r for r in self._uploaded if r not in present),
                key=lambda r: not r.endswith(COMPLETE_MARKER),
            )
            for rel in stale:
                if (self.local / rel).exists():
                    continue  # an incomplete folder being rewritten: keep the remote copy
                self.store.delete(rel)  # a checkpoint training pruned
                del self._uploaded[rel]
            return sent

    def __enter__(self) -> CheckpointMirror:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.push()
