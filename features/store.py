"""The aicrush Feast repo as plain functions: prepare, write offline rows, apply, materialize, read.

A repo folder holds ``feature_store.yaml`` (rendered from the packaged template with the project
and online store of :class:`~aicrush.config.FeaturesConfig`), a one-line ``definitions.py``
that re-exports :mod:`features.definitions` (so ``feast -c <repo> apply|ui`` work there too), and
``data/`` (registry, SQLite online store, offline Parquet).

Request-time features (serving, drift monitor) go through :func:`request_features`, which runs
the on-demand feature view's own transformation in-process: no registry, online store or network
round trip per request, and no second copy of the feature code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from aicrush.config import FeaturesConfig
from aicrush.errors import DataError
from features.file_features import FEATURE_NAMES, compute_file_features

if TYPE_CHECKING:
    from feast import FeatureStore

#: Offline rows of the ``file_statistics`` view, relative to the repo folder.
SOURCE_PATH = "data/file_statistics.parquet"
ENTITY_KEY = "file_id"
TIMESTAMP = "event_timestamp"
CREATED = "created"

_TEMPLATE = Path(__file__).with_name("feature_store.yaml")
_SHIM = '"""Re-exports the aicrush definitions so the Feast CLI works in this folder."""\n\nfrom features.definitions import *  # noqa: F403\n'


def repo_path_for(cfg: FeaturesConfig, state_dir: Path) -> Path:
    """The Feast repo folder: ``features.repo_path`` or ``<state>/feast``."""
    return (
        Path(cfg.repo_path).expanduser().resolve()
        if cfg.repo_path
        else Path(state_dir).resolve() / "feast"
    )


_ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def render_store_yaml(cfg: FeaturesConfig) -> dict:
    """``feature_store.yaml`` for this config: the packaged template with the project, the
    registry (``features.registry_path``, e.g. a ``gs://`` object) and the online store set."""
    conf = yaml.safe_load(_TEMPLATE.read_text())
    conf["project"] = cfg.project
    if cfg.registry_path:
        conf["registry"] = {"registry_type": "file", "path": cfg.registry_path}
    if cfg.online_store == "redis":
        conf["online_store"] = {"type": "redis", "connection_string": cfg.redis_connection_string}
    return conf


def check_environment(cfg: FeaturesConfig, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`~aicrush.errors.DataError` when the Redis connection string refers to an
    environment variable (``${REDIS_PASSWORD}``) that is not set: Feast expands such references
    with :func:`os.path.expandvars`, which leaves an unset one as it is, and Redis then answers
    with an authentication error that names neither the variable nor the setting."""
    if cfg.online_store != "redis":
        return
    environ = os.environ if environ is None else environ
    unset = [
        a or b
        for a, b in _ENV_REFERENCE.findall(cfg.redis_connection_string)
        if (a or b) not in environ
    ]
    if unset:
        raise DataError(
            f"features.redis_connection_string refers to ${{{unset[0]}}}, which is not set in "
            f"this step's environment. In the cluster the pipeline sets $REDIS_PASSWORD from the "
            f"Secret named by features.redis_secret_name "
            f"({cfg.redis_secret_name or 'empty: none'}; key 'password'); elsewhere export "
            f"{unset[0]} before the run"
        )


def prepare_repo(repo_path: Path, cfg: FeaturesConfig) -> Path:
    """Create (or refresh) the repo folder; idempotent. Returns the folder."""
    repo_path = Path(repo_path)
    (repo_path / "data").mkdir(parents=True, exist_ok=True)
    (repo_path / "feature_store.yaml").write_text(
        yaml.safe_dump(render_store_yaml(cfg), sort_keys=False)
    )
    (repo_path / "definitions.py").write_text(_SHIM)
    return repo_path


def open_store(repo_path: Path) -> FeatureStore:
    """A :class:`feast.FeatureStore` over a prepared repo folder."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


def feature_rows(
    file_ids: Sequence[str], texts: Sequence[str], event_time: datetime
) -> pd.DataFrame:
    """Offline rows (file_id, event_timestamp, created, FEATURE_NAMES), one per distinct file_id.

    Files are content-addressed, so a repeated id is computed once.
    """
    frame = pd.DataFrame({ENTITY_KEY: list(file_ids), "text": list(texts)}).drop_duplicates(
        ENTITY_KEY
    )
    feats = compute_file_features(frame["text"].tolist())
    rows = pd.DataFrame({ENTITY_KEY: frame[ENTITY_KEY].to_numpy()})
    rows[TIMESTAMP] = pd.Timestamp(event_time)
    rows[CREATED] = pd.Timestamp(event_time)
    return pd.concat([rows, feats], axis=1)


def write_offline_source(repo_path: Path, rows: pd.DataFrame) -> Path:
    """Write the offline Parquet of the ``file_statistics`` view (replacing the previous one)."""
    path = Path(repo_path) / SOURCE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    rows.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def apply_definitions(store: FeatureStore) -> None:
    """Register the entity, views and services of :mod:`features.definitions` (idempotent)."""
    from features.definitions import FEAST_OBJECTS

    store.apply(list(FEAST_OBJECTS))


def materialize(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load the offline rows with event timestamps between ``start`` and ``end`` into the online store."""
    store.materialize(start_date=start, end_date=end, feature_views=["file_statistics"])


def historical_features(store: FeatureStore, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the training service onto ``entity_df`` (file_id, event_timestamp, ...).

    Feast's file store reorders rows, collapses rows sharing key and timestamp (feast-dev/feast#6787)
    and drops rows older than every feature row of their key: pass one row per key and re-join.
    """
    from features.definitions import training_features

    service = store.get_feature_service(training_features.name)
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()


def online_features(store: FeatureStore, file_ids: Sequence[str]) -> pd.DataFrame:
    """Materialized values for ``file_ids`` from the online store (NaN for unknown ids)."""
    from features.definitions import training_features

    service = store.get_feature_service(training_features.name, allow_cache=True)
    response = store.get_online_features(
        features=service, entity_rows=[{ENTITY_KEY: f} for f in file_ids]
    )
    frame = response.to_df()
    return frame[[ENTITY_KEY, *FEATURE_NAMES]]


def request_features(texts: Sequence[str]) -> pd.DataFrame:
    """Features of request texts through the on-demand view ``file_statistics_from_text``.

    Runs the view's registered transformation in-process (no registry read, no store), so the
    applied definition and what serving computes are one and the same. Columns: FEATURE_NAMES
    (float32), one row per text, in order.
    """
    from features.definitions import file_statistics_from_text

    inputs = pd.DataFrame({"text": list(texts)})
    out = file_statistics_from_text.feature_transformation.transform(inputs)
    return out[list(FEATURE_NAMES)].astype("float32", copy=False)


def utc_now() -> datetime:
    """Now, in UTC and to the microsecond (the resolution Feast's stores keep)."""
    return datetime.now(UTC)


__all__ = [
    "SOURCE_PATH",
    "apply_definitions",
    "feature_rows",
    "historical_features",
    "materialize",
    "online_features",
    "open_store",
    "prepare_repo",
    "repo_path_for",
    "request_features",
    "utc_now",
    "write_offline_source",
]
