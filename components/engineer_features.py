"""engineer_features: file statistics through Feast, from the clean splits to the training frames.

Every distinct file (by sha256) gets its features computed once, by the one feature function
(:func:`features.file_features.compute_file_features`); the rows go to the offline source of the
``file_statistics`` view, the definitions are applied, the online store is materialized, and the
training frames come back from ``get_historical_features`` (a point-in-time join), so what the
model trains on is what the feature store holds.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kfp.dsl import Dataset, Input, Metrics, Output

from aicrush.config import FeaturesConfig, config_from_dict
from aicrush.errors import DataError, google_credentials
from components import pipeline_component
from features import store as feast_store
from features.file_features import FEATURE_NAMES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CLEAN_COLUMNS = ("repository", "path", "sha256", "language", "text", "size")


@dataclass(frozen=True)
class FeatureResult:
    """What engineer() wrote and where the Feast repo is."""

    repo_path: str
    project: str
    feature_service: str
    feature_names: list[str]
    rows: dict[str, int]
    distinct_files: int
    materialized: bool
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {f"rows_{split}": float(n) for split, n in self.rows.items()}
        out.update(
            distinct_files=float(self.distinct_files),
            n_features=float(len(self.feature_names)),
            seconds=round(self.seconds, 3),
            files_per_second=round(sum(self.rows.values()) / self.seconds, 1)
            if self.seconds
            else 0.0,
        )
        return out


def _read_splits(in_dir: Path) -> dict[str, pd.DataFrame]:
    splits = {}
    for split in SPLITS:
        path = in_dir / f"{split}.parquet"
        if not path.is_file():
            raise DataError(
                f"{path} is missing; engineer_features reads the validate_dataset output folder"
            )
        frame = pd.read_parquet(path)
        missing = [c for c in CLEAN_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path} lacks columns {', '.join(missing)}; expected {', '.join(CLEAN_COLUMNS)}"
            )
        splits[split] = frame.reset_index(drop=True)
    if not sum(len(f) for f in splits.values()):
        raise DataError(f"the splits in {in_dir} hold no files; check the validate_dataset report")
    return splits


def engineer(
    in_dir: Path,
    cfg: FeaturesConfig,
    out_dir: Path,
    state_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> FeatureResult:
    """Compute, store and retrieve the features of the clean splits in ``in_dir``.

    Writes ``train/val/test.parquet`` (clean columns + ``file_id`` + FEATURE_NAMES, rows in input
    order) and ``features.json`` to ``out_dir``. The Feast repo is ``cfg.repo_path`` or
    ``<state_dir>/feast``; its offline source is replaced by this dataset's rows.
    """
    say = progress or log.info
    started = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    splits = _read_splits(in_dir)
    clean = pd.concat(splits.values(), ignore_index=True)
    split_of = np.repeat(list(splits), [len(f) for f in splits.values()])

    # One timestamp for the whole run: rows are valid from it, and the training frame is read at it.
    event_time = feast_store.utc_now()
    rows = feast_store.feature_rows(clean["sha256"].tolist(), clean["text"].tolist(), event_time)
    say(f"computed {len(FEATURE_NAMES)} features of {len(rows)} distinct files")

    feast_store.check_environment(cfg)
    repo = feast_store.prepare_repo(feast_store.repo_path_for(cfg, state_dir), cfg)
    feast_store.write_offline_source(repo, rows)
    store = feast_store.open_store(repo)
    # Feast reads and writes a gs:// registry with its own GCS client: no Google credentials
    # there is one CredentialsError naming the setting, not google.auth's traceback.
    with google_credentials(f"features.registry_path {cfg.registry_path}"):
        feast_store.apply_definitions(store)
        say(
            f"applied Feast project {cfg.project!r} in {repo}"
            + (f" (registry {cfg.registry_path})" if cfg.registry_path else "")
        )
        if cfg.materialize:
            feast_store.materialize(
                store, event_time - timedelta(seconds=1), event_time + timedelta(seconds=1)
            )
            say(f"materialized {len(rows)} rows into the {cfg.online_store} online store")

        # One entity row per distinct file, re-joined to the clean rows after: Feast's file store
        # collapses entity rows that share key and timestamp (feast-dev/feast#6787) and reorders
        # rows.
        file_ids = rows[feast_store.ENTITY_KEY]
        entity_df = pd.DataFrame(
            {feast_store.ENTITY_KEY: file_ids, feast_store.TIMESTAMP: event_time}
        )
        retrieved = feast_store.historical_features(store, entity_df)
    retrieved = retrieved.drop_duplicates(feast_store.ENTITY_KEY).set_index(feast_store.ENTITY_KEY)
    joined = retrieved.reindex(clean["sha256"].to_numpy())[list(FEATURE_NAMES)]
    if joined.isna().any().any():
        raise RuntimeError(
            f"Feast returned no features for {int(joined.isna().any(axis=1).sum())} of {len(clean)} "
            f"files; the offline source {repo / feast_store.SOURCE_PATH} is inconsistent"
        )
    frame = clean.assign(file_id=clean["sha256"].to_numpy())
    frame = pd.concat([frame, joined.reset_index(drop=True).astype("float32")], axis=1)

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in SPLITS:
        part = frame[split_of == split].reset_index(drop=True)
        part.to_parquet(out_dir / f"{split}.parquet", index=False)
        counts[split] = len(part)

    from features.definitions import training_features

    result = FeatureResult(
        repo_path=str(repo),
        project=cfg.project,
        feature_service=training_features.name,
        feature_names=list(FEATURE_NAMES),
        rows=counts,
        distinct_files=len(rows),
        materialized=cfg.materialize,
        seconds=time.perf_counter() - started,
        manifest={"event_timestamp": event_time.isoformat(), "online_store": cfg.online_store},
    )
    (out_dir / "features.json").write_text(json.dumps(asdict(result), indent=2))
    say(f"wrote {counts} rows to {out_dir} in {result.seconds:.1f} s")
    return result


def run_engineer_step(
    config: dict[str, Any], state_dir: str, clean: Any, features: Any, metrics: Any
) -> FeatureResult:
    """The component's work: validate the config, engineer, record metrics on the artifacts."""
    from aicrush.progress import report as show_progress
    from aicrush.state import state_dir as resolve_state

    cfg = config_from_dict(config)
    result = engineer(
        Path(clean.path),
        cfg.features,
        Path(features.path),
        resolve_state(state_dir or None),
        progress=show_progress,
    )
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
    features.metadata.update(
        {"feast_repo": result.repo_path, "feature_service": result.feature_service}
    )
    return result


@pipeline_component
def engineer_features(
    config: dict,
    state_dir: str,
    clean: Input[Dataset],
    features: Output[Dataset],
    metrics: Output[Metrics],
) -> None:
    """Compute file statistics, register them in Feast and write the training frames.

    Args:
        config: the validated aicrush config (JSON dict); ``features`` selects the Feast project,
            repo folder and online store.
        state_dir: local state folder; the Feast repo defaults to ``<state_dir>/feast``.
        clean: the clean splits of validate_dataset (``train/val/test.parquet``).
        features: ``train/val/test.parquet`` = the clean columns + ``file_id`` + the feature
            columns, read back from Feast's point-in-time join, and ``features.json`` (feature
            names, Feast project, repo path, feature service, rows per split).
        metrics: rows per split, distinct files, feature count, seconds and files per second.
    """
    from components.engineer_features import run_engineer_step

    run_engineer_step(config, state_dir, clean, features, metrics)
