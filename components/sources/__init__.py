"""Source kinds of ``ingest.sources``, one module each, behind one interface:
``candidates(source, ctx) -> list[Candidate]`` (labelled files known by name, not read yet).

| spelling | kind | module |
| --- | --- | --- |
| ``pypi:NAME==VERSION``, ``pypi:default``, ``pypi:FILE``, ``pypi:FOLDER`` | package index | :mod:`.pypi` |
| ``gs://bucket/prefix`` | Google Cloud Storage | :mod:`.gcs` |
| ``python-environment`` | this Python environment | :mod:`.environment` |
| a URL, ``*.git`` or a folder holding ``.git`` | git repository | :mod:`.git` |
| ``*.parquet`` / ``*.csv`` (any case), a folder ``*.parquet`` | labelled table | :mod:`.table` |
| any other folder | local folder | :mod:`.folder` |

No source at all means :data:`DEFAULT_SOURCES` (the pinned default corpus). :func:`kind_of` decides
the kind from the spelling alone; :func:`collect` calls that kind's module.
"""

from __future__ import annotations

from pathlib import Path

from aicrush.errors import DataError
from components.sources.base import Candidate, Progress, SourceContext
from components.sources.environment import ENVIRONMENT_SOURCE
from components.sources.git import is_git_source
from components.sources.pypi import DEFAULT_SOURCE
from components.sources.table import is_table

__all__ = [
    "DEFAULT_SOURCES",
    "ENVIRONMENT_SOURCE",
    "Candidate",
    "Progress",
    "SourceContext",
    "collect",
    "kind_of",
]

#: What an empty ``ingest.sources`` means: the pinned default corpus.
DEFAULT_SOURCES: tuple[str, ...] = (DEFAULT_SOURCE,)


def kind_of(source: str) -> str:
    """``pypi``, ``gcs``, ``environment``, ``git``, ``table`` or ``folder``.

    Raises :class:`DataError` when a local path does not exist or is none of those.
    """
    if source.startswith("pypi:"):
        return "pypi"
    if source.startswith("gs://"):
        return "gcs"
    if source in ("", ENVIRONMENT_SOURCE):  # "" is the old spelling of the environment
        return "environment"
    if is_git_source(source):
        return "git"
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"source {source!r} does not exist: check ingest.sources")
    if is_table(path):  # before folders: a partitioned Parquet dataset is a folder
        return "table"
    if path.is_dir():
        return "folder"
    raise DataError(
        f"source {source!r} is neither a folder, a git repository, gs://bucket/prefix, "
        f"pypi:NAME==VERSION, {ENVIRONMENT_SOURCE} nor a .parquet/.csv table: check ingest.sources"
    )


def collect(source: str, ctx: SourceContext) -> list[Candidate]:
    """The labelled candidate files of one source, from the module of its kind."""
    from components.sources import environment, folder, gcs, git, pypi, table

    modules = {
        "pypi": pypi,
        "gcs": gcs,
        "environment": environment,
        "git": git,
        "table": table,
        "folder": folder,
    }
    return modules[kind_of(source)].candidates(source, ctx)


def describe(source: str) -> str:
    """How a source is named in messages and manifests."""
    return source if source else ENVIRONMENT_SOURCE
