"""This Python environment (source ``python-environment``): the standard library and the Python
C headers (repository ``stdlib``) and each installed distribution (one repository named after it,
files from its RECORD)."""

from __future__ import annotations

import csv
import importlib.metadata
import os
import re
import sysconfig
from pathlib import Path

from components.sources.base import Candidate, SourceContext, skip_dir

#: The spelling of this source in ``ingest.sources`` (and in manifests).
ENVIRONMENT_SOURCE = "python-environment"


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


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """Every labelled file of the standard library and of the installed distributions."""
    table, skipped = ctx.table, ctx.skipped
    out: list[Candidate] = []
    seen_paths: set[str] = set()
    for prefix, folder in environment_roots():
        for dirpath, dirnames, filenames in os.walk(folder):
            # Installed distributions are their own repositories.
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in ("site-packages", "dist-packages") and not skip_dir(d)
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
