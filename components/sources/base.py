"""What every source kind shares: the :class:`Candidate` row, the :class:`SourceContext` a
source is read with, and the folder walk."""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.languages import LanguageTable

Progress = Callable[[str], None]

_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})


def _noop(_: str) -> None:
    pass


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


@dataclass
class SourceContext:
    """Settings and shared state of one ingest, handed to every source kind.

    ``skipped`` counts files left out, by reason; ``stats`` collects per-kind figures that go into
    ``manifest.json`` (e.g. the ``pypi`` kind's archive sizes and download time); ``notes`` are
    the warnings said on the console, kept for ``manifest.json`` too (see :meth:`note`).
    """

    table: LanguageTable
    repository_depth: int = 0
    workdir: Path = Path(".")
    cache_root: Path = Path(".")
    download_workers: int = 8
    pypi_index_url: str = ""
    progress: Progress = _noop
    skipped: Counter[str] = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    gcs_client: Any = None
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Say a warning about the data on the console and keep it for the manifest."""
        self.progress(message)
        self.notes.append(message)


def repository_of(root_name: str, rel: str, depth: int) -> tuple[str, str]:
    """(repository, path in it) for a file at ``rel`` under a source called ``root_name``."""
    if depth <= 0:
        return root_name, rel
    parts = rel.split("/")
    if len(parts) <= depth:
        return root_name, rel
    return "/".join(parts[:depth]), "/".join(parts[depth:])


def walk(root: Path, skipped: Counter[str] | None = None) -> Iterator[tuple[str, str]]:
    """(relative posix path, absolute path) of regular files under root, sorted, no hidden dirs.

    Symbolic links and other non-regular files (FIFOs, sockets, devices: opening a FIFO waits for
    a writer forever) are left out and counted in ``skipped`` as ``symlink`` and
    ``not_regular_file``.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        for name in sorted(filenames):
            full = base / name
            reason = non_regular_reason(full)
            if reason:
                if skipped is not None:
                    skipped[reason] += 1
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, str(full)


def non_regular_reason(path: str | Path) -> str:
    """Why ``path`` is not read: ``symlink``, ``not_regular_file`` (FIFO, socket, device) or
    ``unreadable`` (gone, no permission); the empty string for a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISREG(mode):
        return ""
    return "symlink" if stat.S_ISLNK(mode) else "not_regular_file"


def skip_dir(name: str) -> bool:
    """Folders never walked: hidden ones, byte code caches, node_modules."""
    return name.startswith(".") or name in _SKIP_DIRS
