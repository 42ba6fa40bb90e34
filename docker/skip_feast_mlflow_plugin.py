"""Unregister Feast's MLflow request-header plugin in this Python environment.

Feast (0.67) registers ``feast = feast.infra.data_sources.mlflow.auth:FeastMLflowHeaderProvider``
under the ``mlflow.request_header_provider`` entry point group. MLflow loads every such plugin
on a process's first call to a tracking server, and loading this one imports the whole ``feast``
package, whose ``@typechecked`` decorators (typeguard 4) parse and compile their modules again at
import (typeguard issue #468): a fresh process's first call took 4.70 s instead of 0.99 s on a
quiet 2-core machine (``benchmarks/bench_mlflow_first_call.py``), and 6-9 s more under load.
Every process that talks to an MLflow server paid it, Feast user or not: each pipeline step, the
rollout steps, the drift monitor, ``aicrush deploy``. A no-op rollout step of the emulated
cluster took 8-12 s instead of 2-3 s.

The plugin adds Feast's own bearer token to MLflow requests only while a Feast MLflow data
source has set one; aicrush uses no such data source, so nothing is lost. aicrush's install
(``make install``) and its images run this script after ``pip install``; it removes that one
entry from Feast's ``entry_points.txt`` and nothing else, and does nothing when the entry is not
there (already removed, or a Feast release without it).

Usage: python docker/skip_feast_mlflow_plugin.py   (in the environment to change)
Exit status: 0 when the entry is gone afterwards; 1 with a one-line message when the file cannot
be read or written (a read-only site-packages) or the entry is still registered after the edit.

A later install of feast (an upgrade, ``--force-reinstall``) writes the entry again: run the
script again after one (``make install`` only reinstalls when pyproject.toml changes).
"""

from __future__ import annotations

import sys
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, distribution
from pathlib import Path

GROUP = "mlflow.request_header_provider"
NAME = "feast"


def _entry(dist: Distribution) -> EntryPoint | None:
    return next((e for e in dist.entry_points if e.group == GROUP and e.name == NAME), None)


def _entry_points_file(dist: Distribution) -> Path:
    """The distribution's entry_points.txt: from RECORD, else in ``feast-<version>.dist-info``
    beside the package (the wheel's folder name, PEP 427)."""
    for record in dist.files or []:
        if record.name == "entry_points.txt" and record.parent.suffix == ".dist-info":
            return Path(str(record.locate()))
    path = Path(str(dist.locate_file(f"feast-{dist.version}.dist-info/entry_points.txt")))
    if not path.is_file():
        raise OSError(f"feast {dist.version}'s entry_points.txt is not in its RECORD nor at {path}")
    return path


def skip_feast_mlflow_plugin() -> str:
    """Remove Feast's entry in GROUP; returns what was done (one line). Only that line changes:
    the file is edited as bytes, line endings and encoding kept. Raises OSError when the entry
    is still registered afterwards or the file cannot be read or written."""
    try:
        dist = distribution("feast")
    except PackageNotFoundError:
        return "feast is not installed: nothing to do"
    entry = _entry(dist)
    if entry is None:
        return f"feast {dist.version} registers no {GROUP} plugin: nothing to do"
    path = _entry_points_file(dist)
    kept, section = [], b""
    for line in path.read_bytes().splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(b"[") and stripped.endswith(b"]"):
            section = stripped.strip(b"[]").strip()
        elif section == GROUP.encode() and stripped.split(b"=", 1)[0].strip() == NAME.encode():
            continue
        kept.append(line)
    path.write_bytes(b"".join(kept))
    if _entry(distribution("feast")) is not None:
        raise OSError(f"{path} still registers {entry.value} after the edit; remove it by hand")
    return f"unregistered feast {dist.version}'s {GROUP} plugin ({entry.value}) in {path}"


if __name__ == "__main__":
    try:
        print(skip_feast_mlflow_plugin())
    except OSError as err:
        sys.exit(f"could not unregister Feast's MLflow plugin: {err}")
