"""Text files and folders in object storage (``gs://``) or on local disk, one place for the
training worker, the TrainJob launcher and the model builder.

The client is :func:`aicrush.gcs.storage_client` (Application Default Credentials,
or anonymous against ``STORAGE_EMULATOR_HOST``). Missing or refused credentials raise
:class:`aicrush.errors.CredentialsError` naming the ``gs://`` URI and how to provide them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aicrush.errors import google_credentials


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/prefix/`` -> ``("bucket", "prefix")``."""
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def _client(uri: str) -> Any:
    from aicrush.gcs import storage_client

    return storage_client(uri)


def read_text(uri: str) -> str:
    """The text of a local file or a ``gs://`` object (google.api_core NotFound when absent)."""
    if uri.startswith("gs://"):
        bucket, name = split_gs(uri)
        with google_credentials(uri):
            return str(_client(uri).bucket(bucket).blob(name).download_as_text())
    return Path(uri).read_text()


def write_text(uri: str, text: str) -> None:
    """Write a local file (parents created) or a ``gs://`` object."""
    if uri.startswith("gs://"):
        bucket, name = split_gs(uri)
        with google_credentials(uri):
            _client(uri).bucket(bucket).blob(name).upload_from_string(
                text, content_type="application/json"
            )
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_text(text)


def upload_folder(folder: Path, uri: str, last: str = "") -> int:
    """Upload every file under ``folder`` to the ``gs://`` prefix ``uri`` (``last`` uploaded
    after the others); returns the number of files."""
    bucket_name, prefix = split_gs(uri)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == last)
    with google_credentials(uri):
        bucket = _client(uri).bucket(bucket_name)
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
        aicrush.errors.CredentialsError: no Google credentials, or refused ones.
    """
    from google.cloud.storage import transfer_manager

    from aicrush.errors import google_credentials_error, is_credentials_error

    bucket_name, prefix = split_gs(uri)
    prefix = prefix + "/" if prefix else ""
    client = _client(uri)
    with google_credentials(uri):
        names = [
            b.name
            for b in client.list_blobs(bucket_name, prefix=prefix)
            if not b.name.endswith("/")
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
        if is_credentials_error(res):
            raise google_credentials_error(uri, res)
        if isinstance(res, Exception):
            raise RuntimeError(f"downloading gs://{bucket_name}/{name} failed: {res}") from res
    return len(names)
