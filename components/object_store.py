"""Text files and folders in object storage (``gs://``) or on local disk, one place for the
training worker, the TrainJob launcher and the model builder.

The client is :func:`components.sources.gcs.storage_client` (Application Default Credentials,
or anonymous against ``STORAGE_EMULATOR_HOST``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/prefix/`` -> ``("bucket", "prefix")``."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def _client() -> Any:
    from components.sources.gcs import storage_client

    return storage_client()


def read_text(uri: str) -> str:
    """The text of a local file or a ``gs://`` object (google.api_core NotFound when absent)."""
    if uri.startswith("gs://"):
        bucket, name = split_gs(uri)
        return str(_client().bucket(bucket).blob(name).download_as_text())
    return Path(uri).read_text()


def write_text(uri: str, text: str) -> None:
    """Write a local file (parents created) or a ``gs://`` object."""
    if uri.startswith("gs://"):
        bucket, name = split_gs(uri)
        _client().bucket(bucket).blob(name).upload_from_string(
            text, content_type="application/json"
        )
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_text(text)


def upload_folder(folder: Path, uri: str, last: str = "") -> int:
    """Upload every file under ``folder`` to the ``gs://`` prefix ``uri`` (``last`` uploaded
    after the others); returns the number of files."""
    bucket_name, prefix = split_gs(uri)
    bucket = _client().bucket(bucket_name)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == last)
    for path in files:
        rel = path.relative_to(folder).as_posix()
        bucket.blob(f"{prefix}/{rel}" if prefix else rel).upload_from_filename(str(path))
    return len(files)


def download_folder(uri: str, dest: Path, missing: str = "") -> int:
    """Every object under ``gs://bucket/prefix/`` into ``dest`` (relative paths kept), with
    google-cloud-storage's transfer manager (8 threads). Returns the number of files.

    Raises:
        FileNotFoundError: no object under the prefix (``missing`` appended: what to do).
        RuntimeError: an object failed to download (its name).
    """
    from google.cloud.storage import transfer_manager

    bucket_name, prefix = split_gs(uri)
    prefix = prefix + "/" if prefix else ""
    client = _client()
    names = [
        b.name for b in client.list_blobs(bucket_name, prefix=prefix) if not b.name.endswith("/")
    ]
    if not names:
        raise FileNotFoundError(f"no objects under {uri}" + (f"; {missing}" if missing else ""))
    dest.mkdir(parents=True, exist_ok=True)
    rel = [n[len(prefix) :] for n in names]
    for r in rel:
        (dest / r).parent.mkdir(parents=True, exist_ok=True)
    results = transfer_manager.download_many_to_path(
        client.bucket(bucket_name),
        rel,
        destination_directory=str(dest),
        blob_name_prefix=prefix,
        worker_type=transfer_manager.THREAD,
        max_workers=8,
    )
    for name, res in zip(names, results, strict=True):
        if isinstance(res, Exception):
            raise RuntimeError(f"downloading gs://{bucket_name}/{name} failed: {res}") from res
    return len(names)
