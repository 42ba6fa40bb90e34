"""Unregister Feast's MLflow request-header plugin in this Python environment.

Feast (0.67) registers ``feast = feast.infra.data_sources.mlflow.auth:FeastMLflowHeaderProvider``
under the ``mlflow.request_header_provider`` entry point group. MLflow loads every such plugin
on a process's first call to a tracking server, and loading this one imports the whole ``feast``
package, whose ``@typechecked`` decorators (typeguard 4) parse and compile their modules again at
import: 6-9 s of CPU on a 2-core machine (typeguard issue #468). Every process that talks to an
MLflow server paid it, Feast user or not: each pipeline step, the rollout steps, the drift
monitor, ``aicrush deploy``. A no-op rollout step took 8-12 s instead of 2-3 s.

The plugin adds Feast's own bearer token to MLflow requests only while a Feast MLflow data
source has set one; aicrush uses no such data source, so nothing is lost. aicrush's install
(``make install``) and its images run this script after ``pip install``; it removes that one
entry from Feast's ``entry_points.txt`` and nothing else, and does nothing when the entry is not
there (already removed, or a Feast release without it).

Usage: python docker/skip_feast_mlflow_plugin.py   (in the environment to change)
Exit status: 0 when the entry is gone afterwards; 1 with a message when the file cannot be
changed (a read-only site-packages).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

GROUP = "mlflow.request_header_provider"
NAME = "feast"


def skip_feast_mlflow_plugin() -> str:
    """Remove Feast's entry in GROUP; returns what was done (one line)."""
    try:
        dist = distribution("feast")
    except PackageNotFoundError:
        return "feast is not installed: nothing to do"
    entry = next((e for e in dist.entry_points if e.group == GROUP and e.name == NAME), None)
    if entry is None:
        return f"feast {dist.version} registers no {GROUP} plugin: nothing to do"
    record = next(
        f
        for f in dist.files or []
        if f.name == "entry_points.txt" and f.parent.suffix == ".dist-info"
    )
    path = Path(str(record.locate()))
    lines = path.read_text().splitlines(keepends=True)
    kept, section = [], ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif section == GROUP and stripped.split("=", 1)[0].strip() == NAME:
            continue
        kept.append(line)
    path.write_text("".join(kept))
    return f"unregistered feast {dist.version}'s {GROUP} plugin ({entry.value}) in {path}"


if __name__ == "__main__":
    try:
        print(skip_feast_mlflow_plugin())
    except OSError as err:
        sys.exit(f"could not unregister Feast's MLflow plugin: {err}")
