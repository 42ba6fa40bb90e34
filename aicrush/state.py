"""Where local state lives and which MLflow store a command talks to: one answer for every command.

Every CLI command, pipeline step and server resolves the state folder and the tracking URI through
these functions, so ``aicrush run`` registers a model where ``aicrush serve``, ``aicrush drift``,
``aicrush monitor`` and ``aicrush deploy`` look for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aicrush.config import RegistryConfig


def state_dir(override: str | os.PathLike[str] | None = None, create: bool = True) -> Path:
    """The folder for local state (MLflow store, Feast stores, pipeline root, caches).

    ``--state-dir`` > ``$AICRUSH_HOME`` > ``./.aicrush``. Created on first use (``create``
    False: only resolved, for a command that must not leave state behind).
    """
    raw = override or os.environ.get("AICRUSH_HOME") or ".aicrush"
    path = Path(raw).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def local_tracking_uri(state: Path) -> str:
    """The embedded MLflow store: SQLite in the state dir (artifacts beside it)."""
    return f"sqlite:///{state / 'mlflow.db'}"


def resolve_tracking_uri(
    cfg: RegistryConfig | None = None,
    state: str | Path | None = None,
    override: str | None = None,
) -> str:
    """``override`` (``--tracking-uri``) > ``registry.tracking_uri`` > ``$MLFLOW_TRACKING_URI`` >
    SQLite under the state dir (:func:`state_dir`)."""
    if override:
        return override
    if cfg is not None and cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return local_tracking_uri(state_dir(state))


def last_summary_path(state: Path) -> Path:
    """The JSON summary of the newest ``aicrush run`` in ``state`` (written after every run)."""
    return state / "runs" / "last-summary.json"


def artifact_root(state: Path) -> str:
    """Where the embedded store keeps artifacts (a new experiment is created with it)."""
    return (state / "mlartifacts").as_uri()
