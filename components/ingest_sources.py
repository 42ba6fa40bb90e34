"""ingest_sources: collect labelled source files into one table, ``files.parquet`` + ``manifest.json``.

Sources (``ingest.sources``), each one of:

- ``gs://bucket/prefix``: google-cloud-storage; parallel downloads through
  ``transfer_manager.download_many`` with the client's retry policy (exponential backoff);
  incremental: an object whose generation is already in the cache index is not downloaded again
  (cache: ``ingest.cache_dir`` or ``<state>/ingest_cache``).
- a git repository (URL, a path ending in ``.git``, or a local folder holding ``.git``): shallow
  ``git clone --depth 1`` into a temporary folder, so only committed files count.
- a local folder.
- a labelled table (``.parquet``/``.csv`` with ``text`` and ``language`` columns, optional
  ``repository`` and ``path``).
- nothing: this Python environment, the standard library (repository ``stdlib``) and each
  installed distribution (one repository named after it, files from its RECORD).

Repositories: a git source is one repository; a folder or bucket prefix is one repository unless
``ingest.repository_depth`` cuts it into sub-folders. Labels come from
:mod:`components.languages`. Caps (``max_file_bytes``, ``max_files_per_repository`` per
(repository, language), ``max_files``) are decided on names and sizes before any file is read,
with a seeded hash order, so the same inputs and seed give the same files. Files holding secrets
are dropped here already, so no artifact ever holds their text (validate scans again).
"""

import contextlib
import csv
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sysconfig
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aicrush.config import IngestConfig
from aicrush.errors import DataError
from components.languages import LanguageTable
from components.validate_dataset import SECRET_SCAN_VERSION, contains_secret

Progress = Callable[[str], None]

#: Columns of files.parquet (and of every split validate writes).
FILE_COLUMNS: tuple[str, ...] = ("repository", "path", "sha256", "language", "text", "size")
FILES_SCHEMA = pa.schema(
    [
        ("repository", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("language", pa.string()),
        ("text", pa.large_string()),
        ("size", pa.int64()),
    ]
)
ENVIRONMENT_SOURCE = "python-environment"
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_GIT_URL = re.compile(r"^(https?://|ssh://|git://|file://|git@[^:]+:)")


@dataclass
class Candidate:
    """A file known by name (and maybe size) before it is read."""

    repository: str
    path: str
    language: str
    location: str = ""  # local file to read ("" for table rows and objects not yet downloaded)
    size: int | None = None
    data: bytes | None = None  # table rows carry their text already
    uri: str = ""  # gs:// object
    generation: int = 0


@dataclass(frozen=True)
class IngestResult:
    """What one ingest produced; the same numbers are in ``manifest.json``."""

    n_files: int
    languages: dict[str, int]
    content_hash: str
    manifest_path: Path
    n_repositories: int = 0
    n_downloaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _noop(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- naming helpers


def _repository_of(root_name: str, rel: str, depth: int) -> tuple[str, str]:
    """(repository, path in it) for a file at ``rel`` under a source called ``root_name``."""
    if depth <= 0:
        return root_name, rel
    parts = rel.split("/")
    if len(parts) <= depth:
        return root_name, rel
    return "/".join(parts[:depth]), "/".join(parts[depth:])


def _walk(root: Path) -> Iterator[tuple[str, str]]:
    """(relative posix path, absolute path) of regular files under root, sorted, no hidden dirs."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        for name in sorted(filenames):
            full = base / name
            if full.is_symlink():
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, str(full)


def is_git_source(source: str) -> bool:
    """URLs, ``*.git`` paths and local folders holding ``.git`` are cloned, not walked."""
    if _GIT_URL.match(source):
        return True
    if source.endswith(".git"):
        return True
    path = Path(source).expanduser()
    return path.is_dir() and (path / ".git").exists()


# ----------------------------------------------------------------------------- sources


def _folder_candidates(
    root: Path, repo_name: str, table: LanguageTable, depth: int, skipped: Counter[str]
) -> list[Candidate]:
    out = []
    for rel, full in _walk(root):
        language = table.language_of(rel)
        if language is None:
            skipped["unlabelled"] += 1
            continue
        repository, path = _repository_of(repo_name, rel, depth)
        out.append(Candidate(repository, path, language, location=full))
    return out


def _git_candidates(
    source: str, workdir: Path, table: LanguageTable, skipped: Counter[str]
) -> list[Candidate]:
    url = source
    local = Path(source).expanduser()
    if not _GIT_URL.match(source) and local.exists():
        url = local.resolve().as_uri()  # file:// so that --depth applies to local repositories
    name = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git") or "repo"
    dest = Path(tempfile.mkdtemp(prefix="git-", dir=workdir)) / name
    cmd = ["git", "clone", "--depth", "1", "--quiet", url, str(dest)]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise DataError(
            f"git clone of {source!r} failed ({'; '.join(tail) or 'exit ' + str(proc.returncode)}): "
            "check ingest.sources, the URL and access rights"
        )
    return _folder_candidates(dest, name, table, 0, skipped)


def _table_candidates(path: Path, skipped: Counter[str]) -> list[Candidate]:
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in ("text", "language") if c not in frame.columns]
    if missing:
        raise DataError(
            f"labelled table {str(path)!r} lacks column(s) {', '.join(missing)}; it needs 'text' "
            "and 'language' (optional 'repository', 'path'): fix the table or ingest.sources"
        )
    repos = frame["repository"] if "repository" in frame.columns else [path.stem] * len(frame)
    paths = (
        frame["path"] if "path" in frame.columns else [f"row-{i:07d}" for i in range(len(frame))]
    )
    out = []
    for text, language, repository, rel in zip(
        frame["text"], frame["language"], repos, paths, strict=True
    ):
        language = str(language).strip() if isinstance(language, str) else ""
        if not language:
            skipped["unlabelled"] += 1
            continue
        data = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else b""
        out.append(Candidate(str(repository), str(rel), language, size=len(data), data=data))
    return out


def environment_roots() -> list[tuple[str, Path]]:
    """(path prefix, folder) of the standard library (and the Python C headers) of this Python."""
    paths = sysconfig.get_paths()
    roots: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for key, prefix in (("stdlib", ""), ("platstdlib", ""), ("include", "include/")):
        raw = paths.get(key)
        if not raw:
            continue
        folder = Path(raw).resolve()
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        roots.append((prefix, folder))
    return roots


def _environment_candidates(table: LanguageTable, skipped: Counter[str]) -> list[Candidate]:
    out: list[Candidate] = []
    seen_paths: set[str] = set()
    for prefix, folder in environment_roots():
        for dirpath, dirnames, filenames in os.walk(folder):
            # Installed distributions are their own repositories.
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in ("site-packages", "dist-packages")
                and d not in _SKIP_DIRS
                and not d.startswith(".")
            )
            rel_dir = Path(dirpath).relative_to(folder).as_posix()
            for name in sorted(filenames):
                rel = prefix + (name if rel_dir == "." else f"{rel_dir}/{name}")
                language = table.language_of(name)
                if language is None:
                    skipped["unlabelled"] += 1
                    continue
                if rel in seen_paths:
                    continue
                seen_paths.add(rel)
                out.append(Candidate("stdlib", rel, language, location=os.path.join(dirpath, name)))
    seen_dists: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        key = re.sub(r"[-_.]+", "-", (name or "").lower())
        if not name or key in seen_dists:
            continue  # the first one on sys.path is the one Python imports
        seen_dists.add(key)
        base = str(dist.locate_file("")).rstrip("/")
        for rel in _distribution_files(dist):
            if rel.startswith(("..", "/")) or "__pycache__" in rel:
                continue  # scripts outside site-packages; byte code
            language = table.language_of(rel)
            if language is None:
                skipped["unlabelled"] += 1
                continue
            out.append(Candidate(name, rel, language, location=f"{base}/{rel}"))
    return out


def _distribution_files(dist: importlib.metadata.Distribution) -> list[str]:
    """Paths a distribution installed. RECORD is parsed directly: ``dist.files`` builds a
    PurePosixPath per file, which cost 6 s of the default ingest."""
    record = dist.read_text("RECORD")
    if record is None:
        return [str(f) for f in dist.files or ()]
    return [row[0] for row in csv.reader(record.splitlines()) if row and row[0]]


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    rest = uri.removeprefix("gs://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise DataError(
            f"source {uri!r} names no bucket: write gs://bucket/prefix in ingest.sources"
        )
    return bucket, prefix


def storage_client() -> Any:
    """A GCS client; anonymous against an emulator (``STORAGE_EMULATOR_HOST``), else ADC."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(credentials=AnonymousCredentials(), project="aicrush-emulator")
    return storage.Client()


def _gcs_candidates(
    source: str, client: Any, table: LanguageTable, depth: int, skipped: Counter[str]
) -> list[Candidate]:
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, prefix = parse_gs_uri(source)
    root_name = f"{bucket}/{prefix}".rstrip("/")
    out = []
    try:
        for blob in client.list_blobs(bucket, prefix=prefix or None, retry=DEFAULT_RETRY):
            name: str = blob.name
            if name.endswith("/"):
                continue
            rel = name[len(prefix) :].lstrip("/") if prefix else name
            if not rel or ".." in rel.split("/"):
                skipped["unsafe_name"] += 1
                continue
            language = table.language_of(rel)
            if language is None:
                skipped["unlabelled"] += 1
                continue
            repository, path = _repository_of(root_name, rel, depth)
            out.append(
                Candidate(
                    repository,
                    path,
                    language,
                    size=int(blob.size or 0),
                    uri=f"gs://{bucket}/{name}",
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
        return self.root / "objects" / uri.removeprefix("gs://")

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

    Returns how many objects were downloaded.
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
            raise DataError(
                f"{len(failed)} of {len(todo)} GCS downloads failed (first: {uri}: {err}); "
                "re-run to retry them (finished downloads are cached)"
            )
    return len(todo)


# ----------------------------------------------------------------------------- caps and reading


def _rank(seed: int, c: Candidate) -> bytes:
    # A per-file hash order: adding a file does not reshuffle which other files are kept.
    return hashlib.blake2b(f"{seed}\0{c.repository}\0{c.path}".encode(), digest_size=8).digest()


def _size_of(c: Candidate) -> int | None:
    if c.size is None:
        try:
            c.size = os.stat(c.location).st_size
        except OSError:
            return None
    return c.size


def select_candidates(
    candidates: Iterable[Candidate], cfg: IngestConfig, skipped: Counter[str]
) -> list[Candidate]:
    """Apply the caps, on names and sizes only, deterministically; sorted by (repository, path)."""
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[(c.repository, c.language)].append(c)
    kept: list[Candidate] = []
    for key in sorted(groups):
        group = groups[key]
        if len(group) > cfg.max_files_per_repository:  # only capped groups need the seeded order
            group.sort(key=lambda c: _rank(cfg.seed, c))
        taken = 0
        for i, c in enumerate(group):
            if taken >= cfg.max_files_per_repository:
                skipped["over_repository_cap"] += len(group) - i
                break
            size = _size_of(c)
            if size is None:
                skipped["unreadable"] += 1
            elif size > cfg.max_file_bytes:
                skipped["too_large"] += 1
            else:
                kept.append(c)
                taken += 1
    if len(kept) > cfg.max_files:
        kept.sort(key=lambda c: _rank(cfg.seed, c))
        skipped["over_max_files"] += len(kept) - cfg.max_files
        kept = kept[: cfg.max_files]
    kept.sort(key=lambda c: (c.repository, c.path))
    return kept


def _read(c: Candidate) -> bytes | None:
    if c.data is not None:
        return c.data
    try:
        with open(c.location, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _read_batch(batch: list[Candidate]) -> list[bytes | None]:
    return [_read(c) for c in batch]


def read_all(selected: list[Candidate], workers: int = 4, batch: int = 256) -> list[bytes | None]:
    """File contents in order; threads overlap disk waits, batches keep the pool overhead small."""
    batches = [selected[i : i + batch] for i in range(0, len(selected), batch)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [data for part in pool.map(_read_batch, batches) for data in part]


def content_hash(rows: Iterable[tuple[str, str, str]]) -> str:
    """sha256 over the sorted (repository, path, sha256) triples: the dataset's identity."""
    digest = hashlib.sha256()
    for repository, path, sha in sorted(rows):
        digest.update(f"{repository}\0{path}\0{sha}\n".encode())
    return digest.hexdigest()


def _describe(source: str) -> str:
    return source if source else ENVIRONMENT_SOURCE


# ----------------------------------------------------------------------------- the step


def ingest(
    cfg: IngestConfig,
    out_dir: Path,
    state_dir: Path,
    progress: Progress | None = None,
) -> IngestResult:
    """Collect the files of ``cfg.sources`` into ``out_dir`` (files.parquet + manifest.json).

    Raises :class:`~aicrush.errors.DataError` with the source and the setting to change when a
    source is missing, unreadable or holds no labelled files.
    """
    say = progress or _noop
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = LanguageTable(cfg.extra_extensions)
    skipped: Counter[str] = Counter()
    objects: dict[str, int] = {}
    secret_paths: list[str] = []
    n_downloaded = 0
    sources = list(cfg.sources) or [""]

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aicrush-ingest-")))
        candidates: list[Candidate] = []
        client = None
        for source in sources:
            if not source:
                found = _environment_candidates(table, skipped)
            elif source.startswith("gs://"):
                client = client or storage_client()
                found = _gcs_candidates(source, client, table, cfg.repository_depth, skipped)
            elif is_git_source(source):
                found = _git_candidates(source, workdir, table, skipped)
            else:
                path = Path(source).expanduser()
                if not path.exists():
                    raise DataError(f"source {source!r} does not exist: check ingest.sources")
                if path.is_file() and path.suffix in (".parquet", ".csv"):
                    found = _table_candidates(path, skipped)
                elif path.is_dir():
                    name = path.resolve().name or "root"
                    found = _folder_candidates(path, name, table, cfg.repository_depth, skipped)
                else:
                    raise DataError(
                        f"source {source!r} is neither a folder, a git repository, gs://bucket/prefix "
                        "nor a .parquet/.csv table: check ingest.sources"
                    )
            if not found:
                raise DataError(
                    f"source {_describe(source)!r} holds no files with a known language: check "
                    "ingest.sources, or map its file types with ingest.extra_extensions"
                )
            say(f"ingest: {len(found)} labelled candidate files in {_describe(source)}")
            candidates.extend(found)

        # One file per (repository, path): the first source that names it wins.
        unique: dict[tuple[str, str], Candidate] = {}
        for c in candidates:
            if (c.repository, c.path) in unique:
                skipped["duplicate_path"] += 1
            else:
                unique[(c.repository, c.path)] = c
        n_candidates = len(unique)
        selected = select_candidates(unique.values(), cfg, skipped)

        remote = [c for c in selected if c.uri]
        cache: ObjectCache | None = None
        redacted: set[str] = set()
        if remote:
            cache_root = Path(cfg.cache_dir) if cfg.cache_dir else Path(state_dir) / "ingest_cache"
            cache = ObjectCache(cache_root)
            n_downloaded = download_objects(client, remote, cache, cfg.download_workers, say)
            objects = {c.uri: c.generation for c in remote}
            redacted = {c.uri for c in remote if cache.is_redacted(c.uri, c.generation)}

        say(f"ingest: reading {len(selected)} of {n_candidates} candidate files")
        payloads = read_all(selected)

        columns: dict[str, list[Any]] = {name: [] for name in FILE_COLUMNS}
        for c, data in zip(selected, payloads, strict=True):
            if c.uri in redacted:  # found holding a secret on an earlier run; not on disk now
                skipped["secret"] += 1
                secret_paths.append(f"{c.repository}/{c.path}")
                continue
            if data is None:
                skipped["unreadable"] += 1
                continue
            if len(data) > cfg.max_file_bytes:
                skipped["too_large"] += 1
                continue
            if contains_secret(data):
                skipped["secret"] += 1  # counted and named, the text never stored
                secret_paths.append(f"{c.repository}/{c.path}")
                if cache is not None and c.uri:
                    cache.redact(c.uri, c.generation)  # nor kept in the download cache
                continue
            try:
                text: str | None = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None  # kept so that validate counts it
            columns["repository"].append(c.repository)
            columns["path"].append(c.path)
            columns["sha256"].append(hashlib.sha256(data).hexdigest())
            columns["language"].append(c.language)
            columns["text"].append(text)
            columns["size"].append(len(data))
        if cache is not None and cache.redacted:
            cache.save()

    n_files = len(columns["path"])
    if n_files == 0:
        raise DataError(
            f"no file of {', '.join(map(_describe, sources))} passed the ingest caps "
            f"({dict(skipped)}): raise ingest.max_file_bytes or check ingest.sources"
        )
    pq.write_table(
        pa.table(columns, schema=FILES_SCHEMA), out_dir / "files.parquet", compression="snappy"
    )
    languages = dict(sorted(Counter(columns["language"]).items()))
    digest = content_hash(
        zip(columns["repository"], columns["path"], columns["sha256"], strict=True)
    )
    n_repositories = len(set(columns["repository"]))
    manifest = {
        "n_files": n_files,
        "n_candidates": n_candidates,
        "languages": languages,
        "repositories": n_repositories,
        "content_hash": digest,
        "sources": [_describe(s) for s in sources],
        "objects": dict(sorted(objects.items())),
        "downloaded": n_downloaded,
        "skipped": dict(sorted(skipped.items())),
        "secret_scan_version": SECRET_SCAN_VERSION,
        "secret_paths": sorted(secret_paths),
        "caps": {
            "max_file_bytes": cfg.max_file_bytes,
            "max_files_per_repository": cfg.max_files_per_repository,
            "max_files": cfg.max_files,
            "seed": cfg.seed,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    say(f"ingest: {n_files} files, {len(languages)} languages, {n_repositories} repositories")
    return IngestResult(
        n_files=n_files,
        languages=languages,
        content_hash=digest,
        manifest_path=manifest_path,
        n_repositories=n_repositories,
        n_downloaded=n_downloaded,
        skipped=dict(sorted(skipped.items())),
    )


def run_ingest_step(config: dict[str, Any], state_dir: str, dataset: Any, metrics: Any) -> str:
    """The body of the ``ingest_sources`` component: validate the config, ingest, log metrics.

    Returns the dataset's content hash.
    """
    from aicrush.config import config_from_dict
    from aicrush.progress import report as show_progress
    from aicrush.state import state_dir as default_state_dir

    cfg = config_from_dict(config).ingest
    state = Path(state_dir) if state_dir else default_state_dir()
    result = ingest(cfg, Path(dataset.path), state, progress=show_progress)
    metrics.log_metric("n_files", float(result.n_files))
    metrics.log_metric("n_languages", float(len(result.languages)))
    metrics.log_metric("n_repositories", float(result.n_repositories))
    metrics.log_metric("n_downloaded", float(result.n_downloaded))
    dataset.metadata["content_hash"] = result.content_hash
    dataset.metadata["n_files"] = result.n_files
    dataset.metadata["languages"] = result.languages
    return result.content_hash


# ----------------------------------------------------------------------------- KFP component

from kfp.dsl import Dataset, Metrics, Output  # noqa: E402

from components import pipeline_component  # noqa: E402


@pipeline_component
def ingest_sources(
    config: dict, state_dir: str, dataset: Output[Dataset], metrics: Output[Metrics]
) -> str:
    """Collect labelled source files from ``config['ingest']['sources']``.

    Args:
        config: the whole aicrush config as a JSON dict (``AicrushConfig.to_dict()``); the
            ``ingest`` section is used.
        state_dir: local state folder (holds ``ingest_cache/`` for GCS objects); "" for the
            default (``$AICRUSH_HOME`` or ``./.aicrush``).
        dataset: output folder: ``files.parquet`` (repository, path, sha256, language, text,
            size) and ``manifest.json`` (counts, content hash, sources, GCS generations).
        metrics: n_files, n_languages, n_repositories, n_downloaded.

    Returns:
        The dataset's content hash (sha256 over sorted repository, path, file sha256).
    """
    from components.ingest_sources import run_ingest_step

    return run_ingest_step(config, state_dir, dataset, metrics)
