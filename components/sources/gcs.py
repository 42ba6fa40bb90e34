"""``gs://bucket/prefix``: google-cloud-storage. Objects are listed first (names, sizes,
generations); only the ones the ingest caps select are downloaded, in parallel through
``transfer_manager.download_many`` with the client's retry policy (exponential backoff), into
``<cache>/objects/``. Incremental: an object whose generation is already cached is not downloaded
again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aicrush.errors import (
    DataError,
    google_credentials,
    google_credentials_error,
    is_credentials_error,
)
from aicrush.gcs import storage_client  # re-exported: components import it from here
from components.sources.base import Candidate, Progress, SourceContext, repository_of

PREFIX = "gs://"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    rest = uri.removeprefix(PREFIX)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise DataError(
            f"source {uri!r} names no bucket: write gs://bucket/prefix in ingest.sources"
        )
    return bucket, prefix


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """The objects under ``source`` with a known language (not downloaded yet: ``uri`` set).

    Raises :class:`DataError` when the bucket is missing or not readable.
    """
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, prefix = parse_gs_uri(source)
    if ctx.gcs_client is None:
        ctx.gcs_client = storage_client(f"source {source}")
    root_name = f"{bucket}/{prefix}".rstrip("/")
    out = []
    # Credentials found at first can be refused when used (an expired login).
    with google_credentials(f"source {source}"):
        try:
            for blob in ctx.gcs_client.list_blobs(
                bucket, prefix=prefix or None, retry=DEFAULT_RETRY
            ):
                name: str = blob.name
                if name.endswith("/"):
                    continue
                rel = name[len(prefix) :].lstrip("/") if prefix else name
                if not rel or ".." in rel.split("/"):
                    ctx.skipped["unsafe_name"] += 1
                    continue
                language = ctx.table.language_of(rel)
                if language is None:
                    ctx.skipped["unlabelled"] += 1
                    continue
                repository, path = repository_of(root_name, rel, ctx.repository_depth)
                out.append(
                    Candidate(
                        repository,
                        path,
                        language,
                        size=int(blob.size or 0),
                        uri=f"{PREFIX}{bucket}/{name}",
                        generation=int(blob.generation or 0),
                    )
                )
        except (gexc.NotFound, gexc.Forbidden) as err:
            raise DataError(
                f"bucket {bucket!r} does not exist or is not readable (source {source}): check "
                f"ingest.sources and credentials ({type(err).__name__})"
            ) from None
    return out


class ObjectCache:
    """Downloaded GCS objects by generation: ``<cache>/objects/<bucket>/<name>`` + ``index.json``.

    An object found to hold a secret is deleted from the cache and its generation recorded in
    ``redacted.json``: it is neither kept on disk nor downloaded or read again (a new generation
    of it is fetched and scanned like any other).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.json"
        self.redacted_path = root / "redacted.json"
        self.index: dict[str, int] = {}
        self.redacted: dict[str, int] = {}
        if self.index_path.is_file():
            self.index = {k: int(v) for k, v in json.loads(self.index_path.read_text()).items()}
        if self.redacted_path.is_file():
            self.redacted = {
                k: int(v) for k, v in json.loads(self.redacted_path.read_text()).items()
            }

    def path_of(self, uri: str) -> Path:
        return self.root / "objects" / uri.removeprefix(PREFIX)

    def has(self, uri: str, generation: int) -> bool:
        return self.index.get(uri) == generation and self.path_of(uri).is_file()

    def is_redacted(self, uri: str, generation: int) -> bool:
        return self.redacted.get(uri) == generation

    def redact(self, uri: str, generation: int) -> None:
        """Delete a cached object that holds a secret and remember its generation."""
        self.path_of(uri).unlink(missing_ok=True)
        self.index.pop(uri, None)
        self.redacted[uri] = generation

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for path, data in ((self.index_path, self.index), (self.redacted_path, self.redacted)):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(sorted(data.items())), indent=0))
            tmp.replace(path)


def download_objects(
    client: Any, objects: list[Candidate], cache: ObjectCache, workers: int, progress: Progress
) -> int:
    """Fetch the objects whose generation is not cached; point every candidate at its cached file.

    Returns how many objects were downloaded. Raises :class:`DataError` when some failed (the
    finished ones stay cached).
    """
    from google.cloud.storage import transfer_manager
    from google.cloud.storage.retry import DEFAULT_RETRY

    todo = [
        c
        for c in objects
        if not cache.has(c.uri, c.generation) and not cache.is_redacted(c.uri, c.generation)
    ]
    for c in objects:
        c.location = str(cache.path_of(c.uri))
    if todo:
        progress(f"ingest: downloading {len(todo)} of {len(objects)} objects ({workers} workers)")
        pairs = []
        for c in todo:
            bucket, name = parse_gs_uri(c.uri)
            dest = cache.path_of(c.uri)
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = client.bucket(bucket).blob(name, generation=c.generation or None)
            pairs.append((blob, str(dest)))
        results = transfer_manager.download_many(
            pairs,
            download_kwargs={"retry": DEFAULT_RETRY},
            worker_type=transfer_manager.THREAD,
            max_workers=workers,
        )
        failed = []
        for c, result in zip(todo, results, strict=True):
            if isinstance(result, Exception):
                failed.append((c.uri, result))
            else:
                cache.index[c.uri] = c.generation
        cache.save()
        if failed:
            uri, err = failed[0]
            if is_credentials_error(err):
                raise google_credentials_error(uri, err)
            raise DataError(
                f"{len(failed)} of {len(todo)} GCS downloads failed (first: {uri}: {err}); "
                "re-run to retry them (finished downloads are cached)"
            )
    return len(todo)
