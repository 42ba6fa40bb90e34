"""Windows of paired inference records: closed by row count, by age, or whichever comes first."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.file_features import FEATURE_NAMES
from serving.monitor.drift import MIN_ROWS

RECORD_COLUMNS = ("ts", "text", "prediction", "score")


@dataclass(frozen=True)
class WindowPolicy:
    """``max_rows``: close after this many rows; ``max_age_s``: close this long after the first row
    (when it holds at least ``min_rows``, by default the drift test's minimum for a verdict; a
    smaller window waits). ``None`` disables a bound. A ``max_rows`` under the drift test's
    minimum gives windows whose verdict is "not enough data"."""

    max_rows: int | None = 1000
    max_age_s: float | None = None
    min_rows: int = MIN_ROWS

    def __post_init__(self) -> None:
        if self.max_rows is None and self.max_age_s is None:
            raise ValueError("a window needs max_rows, max_age_s or both")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"window max_rows must be >= 1, got {self.max_rows}")


@dataclass
class Window:
    """The open window of one model version: raw records (text, predicted label, score)."""

    policy: WindowPolicy
    started: float | None = None
    records: list[tuple[float, str, str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def add(self, ts: float, text: str, prediction: str, score: float) -> None:
        if self.started is None:
            self.started = ts
        self.records.append((ts, text, prediction, score))

    def extend(self, records: list[tuple[float, str, str, float]]) -> None:
        """Append records as given (the same tuples: featurized-ahead rows are found by identity)."""
        if records and self.started is None:
            self.started = records[0][0]
        self.records.extend(records)

    def is_full(self, now: float | None = None) -> bool:
        p = self.policy
        if p.max_rows is not None and len(self.records) >= p.max_rows:
            return True
        if p.max_age_s is not None and self.started is not None and self.records:
            now = time.time() if now is None else now
            return now - self.started >= p.max_age_s and len(self.records) >= p.min_rows
        return False

    def take(self) -> list[tuple[float, str, str, float]]:
        """Remove and return up to ``max_rows`` records (the closed window)."""
        n = self.policy.max_rows or len(self.records)
        taken, self.records = self.records[:n], self.records[n:]
        self.started = self.records[0][0] if self.records else None
        return taken


def window_frame(
    records: list[tuple[float, str, str, float]],
    cached: Mapping[int, tuple[tuple, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Features (through the one feature function) + prediction + score for a list of records.

    ``cached`` maps ``id(record)`` to ``(record, feature row)`` when it was featurized ahead of time (the
    monitor does that in the background while the window fills); the rest are computed here.
    """
    from serving.monitor.features import features_of

    cached = cached or {}
    hits = {
        i: cached[id(r)][1]
        for i, r in enumerate(records)
        if id(r) in cached and cached[id(r)][0] is r
    }
    missing = [i for i in range(len(records)) if i not in hits]
    values = np.empty((len(records), len(FEATURE_NAMES)), dtype=np.float32)
    if missing:
        values[missing] = features_of([records[i][1] for i in missing]).to_numpy(np.float32)
    for i, row in hits.items():
        values[i] = row
    frame = pd.DataFrame(values, columns=list(FEATURE_NAMES))
    frame["prediction"] = [r[2] for r in records]
    frame["score"] = [r[3] for r in records]
    return frame[[*FEATURE_NAMES, "prediction", "score"]]
