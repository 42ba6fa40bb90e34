"""ingest_sources: collect labelled source files into one table, ``files.parquet`` + ``manifest.json``.

Each entry of ``ingest.sources`` is read by the module of its kind under :mod:`components.sources`
(``pypi:NAME==VERSION``, ``gs://bucket/prefix``, a git repository, a local folder, a labelled table,
``python-environment``); no source means the pinned default corpus (``pypi:default``). This module
keeps the orchestration: one file per (repository, path), the caps, the GCS downloads of the
selected objects, reading, the secret scan and the outputs.

Repositories: a git source or a package is one repository; a folder or bucket prefix is one
repository unless ``ingest.repository_depth`` cuts it into sub-folders. Labels come from
:mod:`components.languages`. Caps (``max_file_bytes``, ``max_files_per_repository`` per
(repository, language), ``max_files``) are decided on names and sizes before any file is read,
with a seeded hash order, so the same inputs and seed give the same files. Files holding secrets
are dropped here already, so no artifact ever holds their text (validate scans again).
"""

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aicrush.config import IngestConfig
from aicrush.errors import DataError
from components.languages import EXTENSIONS, FILE_NAMES, LanguageTable
from components.sources import (
    DEFAULT_SOURCES,
    ENVIRONMENT_SOURCE,
    Candidate,
    Progress,
    SourceContext,
    collect,
    describe,
)
from components.sources.gcs import ObjectCache, download_objects, storage_client
from components.validate_dataset import SECRET_SCAN_VERSION, contains_secret

# ``storage_client`` is imported from here by the train step (model uploads to gs://).
__all__ = [
    "ENVIRONMENT_SOURCE",
    "FILE_COLUMNS",
    "IngestResult",
    "ingest",
    "ingest_sources",
    "run_ingest_step",
    "storage_client",
]

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


@dataclass(frozen=True)
class IngestResult:
    """What one ingest produced; the same numbers are in ``manifest.json``.

    ``n_downloaded``: GCS objects plus pypi: packages this run fetched (0 on a warm cache);
    ``download_bytes``: the size of all pypi: archives of the sources (what a cold cache fetches).
    """

    n_files: int
    languages: dict[str, int]
    content_hash: str
    manifest_path: Path
    n_repositories: int = 0
    n_downloaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    download_bytes: int = 0


# ----------------------------------------------------------------------------- caps and reading


def _rank(seed: int, c: Candidate) -> bytes:
    # A per-file hash order: adding a file does not reshuffle which other files are kept.
    return hashlib.blake2b(f"{seed}\0{c.repository}\0{c.path}".encode(), digest_size=8).digest()


def _size_of(c: Candidate) -> int | str:
    """The size of a candidate, or why it cannot be read (a skip reason)."""
    if c.size is None:
        try:
            info = os.stat(c.location)
        except OSError:
            return "unreadable"
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read forever
            return "not_regular_file"
        c.size = info.st_size
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
            if isinstance(size, str):
                skipped[size] += 1
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


def unify_label_case(candidates: Iterable[Candidate], table: LanguageTable) -> Counter[str]:
    """Give labels that differ from a language of the table only in case the table's spelling
    (``python`` -> ``Python``), so they are one class; returns files relabelled, by
    ``"python -> Python"``. Raises :class:`DataError` for other labels spelled in several cases.
    """
    canonical: dict[str, str] = {}
    for name in (*EXTENSIONS.values(), *FILE_NAMES.values(), *table.languages()):
        if name:
            canonical.setdefault(name.casefold(), name)  # built-in spellings first
    mapped: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    example: dict[str, str] = {}
    for c in candidates:
        name = canonical.get(c.language.casefold(), c.language)
        if name != c.language:
            mapped[f"{c.language} -> {name}"] += 1
            c.language = name
        spellings[name.casefold()][name] += 1
        example.setdefault(name, f"{c.repository}/{c.path}")
    clashes = [counts for counts in spellings.values() if len(counts) > 1]
    if clashes:
        named = "; ".join(
            " vs ".join(
                f"{label!r} ({n} files, e.g. {example[label]})" for label, n in sorted(c.items())
            )
            for c in clashes[:3]
        )
        raise DataError(
            f"{len(clashes)} label(s) are spelled in several cases: {named}. They would be "
            "separate classes: write one spelling in the labelled table (ingest.sources)"
        )
    return mapped


def skipped_text(skipped: Counter[str], cfg: IngestConfig, duplicates: list[str]) -> str:
    """``20 over_repository_cap (ingest.max_files_per_repository is 10 ...); 3 too_large ...``:
    every reason with its count and the setting that decides it, largest first."""
    hints = {
        "over_repository_cap": f"ingest.max_files_per_repository is {cfg.max_files_per_repository}"
        " per repository and language: raise it to keep them",
        "over_max_files": f"ingest.max_files is {cfg.max_files}",
        "too_large": f"over ingest.max_file_bytes, {cfg.max_file_bytes}",
        "duplicate_path": "(repository, path) named by an earlier row or source, the first "
        f"kept: {', '.join(duplicates[:3])}" + (", ..." if len(duplicates) > 3 else ""),
        "unlabelled": "file types without a language; ingest.extra_extensions maps them",
        "unlabelled_row": "table rows without a language",
        "symlink": "symbolic links are not followed",
        "not_regular_file": "FIFOs, sockets, devices",
        "secret": "manifest.json secret_paths names them",
    }
    return "; ".join(
        f"{n} {reason}" + (f" ({hints[reason]})" if reason in hints else "")
        for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        if n
    )


def _read(c: Candidate) -> bytes | None:
    if c.data is not None:
        return c.data
    try:
        # Non-blocking: a file replaced by a FIFO since it was listed must not hang the read.
        fd = os.open(c.location, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            return fh.read() if stat.S_ISREG(os.fstat(fd).st_mode) else None
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
    say = progress or (lambda _: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else Path(state_dir) / "ingest_cache"
    objects: dict[str, int] = {}
    secret_paths: list[str] = []
    n_downloaded = 0
    sources = list(cfg.sources) or list(DEFAULT_SOURCES)

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aicrush-ingest-")))
        ctx = SourceContext(
            table=LanguageTable(cfg.extra_extensions),
            repository_depth=cfg.repository_depth,
            workdir=workdir,
            cache_root=cache_root,
            download_workers=cfg.download_workers,
            pypi_index_url=cfg.pypi_index_url,
            progress=say,
        )
        skipped = ctx.skipped
        candidates: list[Candidate] = []
        for source in sources:
            found = collect(source, ctx)
            if not found:
                raise DataError(
                    f"source {describe(source)!r} holds no files with a known language: check "
                    "ingest.sources, or map its file types with ingest.extra_extensions"
                )
            say(f"ingest: {len(found)} labelled candidate files in {describe(source)}")
            candidates.extend(found)

        relabelled = unify_label_case(candidates, ctx.table)
        if relabelled:
            ctx.note(
                f"ingest: {sum(relabelled.values())} labels took the language table's spelling: "
                + ", ".join(f"{k} ({n})" for k, n in sorted(relabelled.items()))
            )

        # One file per (repository, path): the first source that names it wins.
        unique: dict[tuple[str, str], Candidate] = {}
        duplicates: list[str] = []
        for c in candidates:
            if (c.repository, c.path) in unique:
                skipped["duplicate_path"] += 1
                duplicates.append(f"{c.repository}/{c.path}")
            else:
                unique[(c.repository, c.path)] = c
        n_candidates = len(unique)
        selected = select_candidates(unique.values(), cfg, skipped)

        remote = [c for c in selected if c.uri]
        cache: ObjectCache | None = None
        redacted: set[str] = set()
        if remote:
            cache = ObjectCache(cache_root)
            n_downloaded = download_objects(
                ctx.gcs_client, remote, cache, cfg.download_workers, say
            )
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
    left_out = skipped_text(skipped, cfg, duplicates)
    if n_files == 0:
        raise DataError(
            f"no file of {', '.join(map(describe, sources))} passed the ingest caps "
            f"({left_out}): raise ingest.max_file_bytes or check ingest.sources"
        )
    if left_out:
        n = sum(skipped.values())
        ctx.note(f"ingest: left out {n} file{'s' if n > 1 else ''}: {left_out}")
    pq.write_table(
        pa.table(columns, schema=FILES_SCHEMA), out_dir / "files.parquet", compression="snappy"
    )
    languages = dict(sorted(Counter(columns["language"]).items()))
    digest = content_hash(
        zip(columns["repository"], columns["path"], columns["sha256"], strict=True)
    )
    n_repositories = len(set(columns["repository"]))
    pypi: dict[str, Any] = ctx.stats.get("pypi", {})
    manifest = {
        "n_files": n_files,
        "n_candidates": n_candidates,
        "languages": languages,
        "repositories": n_repositories,
        "content_hash": digest,
        "sources": [describe(s) for s in sources],
        "objects": dict(sorted(objects.items())),
        "downloaded": n_downloaded,
        # pypi: sources: every package's archive (name, bytes, sha256), how many were downloaded
        # by this run, and the bytes a fresh cache downloads for this corpus.
        "packages": dict(sorted(pypi.get("packages", {}).items())),
        "packages_downloaded": int(pypi.get("downloaded", 0)),
        "download_bytes": sum(int(p.get("bytes") or 0) for p in pypi.get("packages", {}).values()),
        "downloaded_bytes": int(pypi.get("download_bytes", 0)),
        "download_seconds": float(pypi.get("download_seconds", 0.0)),
        "skipped": dict(sorted(skipped.items())),
        # What the console warned about the data: bad table rows, relabelled spellings, caps.
        "notes": ctx.notes,
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
        n_downloaded=n_downloaded + int(manifest["packages_downloaded"]),  # type: ignore[call-overload]
        skipped=dict(sorted(skipped.items())),
        download_bytes=int(manifest["download_bytes"]),  # type: ignore[call-overload]
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
    metrics.log_metric("download_bytes", float(result.download_bytes))
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
        state_dir: local state folder (holds ``ingest_cache/`` for GCS objects and pypi:
            packages); "" for the default (``$AICRUSH_HOME`` or ``./.aicrush``).
        dataset: output folder: ``files.parquet`` (repository, path, sha256, language, text,
            size) and ``manifest.json`` (counts, content hash, sources, GCS generations, package
            archives and download sizes).
        metrics: n_files, n_languages, n_repositories, n_downloaded (GCS objects and packages
            fetched by this run), download_bytes (the pypi: archives of the corpus).

    Returns:
        The dataset's content hash (sha256 over sorted repository, path, file sha256).
    """
    from components.ingest_sources import run_ingest_step

    return run_ingest_step(config, state_dir, dataset, metrics)
