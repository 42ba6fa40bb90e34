"""Evidently drift analysis of one window of traffic against the reference sample.

Columns compared: every feature in :data:`FEATURE_NAMES` (numerical) plus ``prediction``
(the predicted label, categorical), so both the input and the prediction distribution are watched.

Two paths share one definition of drift (:class:`DriftSettings`):

- :func:`analyze_window` runs Evidently's registered stat tests column by column (the same ones
  ``DataDriftPreset`` runs) and returns scores and the dataset verdict; it is what the monitor does
  on every window, because the full preset also renders plotly figures for every column (about
  3 s of 4 s for 10,000 rows on this CPU).
- :func:`build_report` runs ``Report([DataDriftPreset(...)])`` with the same methods and thresholds
  for the HTML report (on drift, every N windows, and in ``aicrush drift``).

Why these tests: the normalized Wasserstein distance (numerical) and the Jensen-Shannon distance
(categorical) measure *how far* a distribution moved, so they do not raise alarms on tiny but
statistically significant differences the way p-value tests (K-S, chi-squared) do on windows of
thousands of rows. With thresholds 0.15 (numerical) and 0.1 (prediction) and ``drift_share`` 0.5,
windows of 500 rows sampled like the reference gave 0 false alarms in 200 (largest share of
drifted columns 0.19), while a JavaScript+CSS-only window drifts about 90 % of the columns
(``benchmarks/bench_drift.py``). At 0.1 for the numerical columns the largest share was 0.43:
too close to the 0.5 line.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.file_features import FEATURE_NAMES

PREDICTION_COLUMN = "prediction"
MIN_ROWS = 200
"""Fewest rows in a window (and in the reference) for a drift verdict; below it the verdict is
"not enough data". Chosen from ``benchmarks/bench_drift_small_samples.py`` (docs/monitoring.md)."""
# Methods whose score is a distance (drift when score >= threshold); the others are p-values.
_DISTANCE_METHODS = frozenset({"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"})


@dataclass(frozen=True)
class DriftSettings:
    """What counts as drift. Shared by the online monitor, the offline command and the HTML report.

    ``num_method`` / ``cat_method`` are Evidently stat test names; a column drifts when its score
    crosses ``num_threshold`` / ``cat_threshold``; the window drifts when at least ``drift_share``
    of the columns drift.
    """

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    num_threshold: float = 0.15
    cat_threshold: float = 0.1
    drift_share: float = 0.5
    columns: tuple[str, ...] = (*FEATURE_NAMES, PREDICTION_COLUMN)
    categorical: tuple[str, ...] = (PREDICTION_COLUMN,)
    min_rows: int = MIN_ROWS

    def features_only(self) -> DriftSettings:
        """The same test without the ``prediction`` column (texts without predictions)."""
        return replace(
            self,
            columns=tuple(c for c in self.columns if c != PREDICTION_COLUMN),
            categorical=tuple(c for c in self.categorical if c != PREDICTION_COLUMN),
        )

    def method_of(self, column: str) -> str:
        return self.cat_method if column in self.categorical else self.num_method

    def threshold_of(self, column: str) -> float:
        return self.cat_threshold if column in self.categorical else self.num_threshold


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one window: per-column scores, the share of drifted columns, the flag.

    ``enough_data`` False: the window or the reference had fewer than ``settings.min_rows`` rows;
    then there are no column scores, ``share_drifted`` is NaN and ``dataset_drift`` False, and
    :attr:`verdict` is ``"not_enough_data"``: neither drift nor no drift is claimed.
    """

    n_rows: int
    n_reference_rows: int
    columns: tuple[ColumnDrift, ...]
    share_drifted: float
    dataset_drift: bool
    settings: DriftSettings = field(default_factory=DriftSettings)
    enough_data: bool = True

    @property
    def n_drifted(self) -> int:
        return sum(c.drifted for c in self.columns)

    @property
    def verdict(self) -> str:
        """``drift``, ``no_drift`` or ``not_enough_data``."""
        if not self.enough_data:
            return "not_enough_data"
        return "drift" if self.dataset_drift else "no_drift"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``dataset_drift`` and ``share_drifted`` are None (null) for a
        ``not_enough_data`` window; ``verdict`` says which of the three it is."""
        out = asdict(self)
        out["n_drifted"] = self.n_drifted
        out["verdict"] = self.verdict
        if math.isnan(self.share_drifted):
            out["share_drifted"] = None
        if not self.enough_data:  # neither drift nor no drift is claimed
            out["dataset_drift"] = None
        out["settings"]["columns"] = list(self.settings.columns)
        out["settings"]["categorical"] = list(self.settings.categorical)
        return out


def _check_columns(frame: pd.DataFrame, settings: DriftSettings, what: str) -> None:
    missing = [c for c in settings.columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} lacks columns {missing}: it needs the feature columns of "
            "features.file_features.FEATURE_NAMES and 'prediction' (the predicted label)"
        )


def analyze_window(
    current: pd.DataFrame, reference: pd.DataFrame, settings: DriftSettings | None = None
) -> DriftResult:
    """Compare one window with the reference, column by column, with Evidently's stat tests.

    Fewer than ``settings.min_rows`` rows in the window or the reference: a "not enough data"
    result (no tests run). Raises ValueError when a column is missing or the window is empty.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    settings = settings or DriftSettings()
    _check_columns(current, settings, "the window")
    _check_columns(reference, settings, "the reference")
    if len(current) == 0:
        raise ValueError("the window is empty: nothing to compare with the reference")
    if min(len(current), len(reference)) < settings.min_rows:
        return DriftResult(
            n_rows=len(current),
            n_reference_rows=len(reference),
            columns=(),
            share_drifted=math.nan,
            dataset_drift=False,
            settings=settings,
            enough_data=False,
        )
    results = []
    for column in settings.columns:
        categorical = column in settings.categorical
        kind = ColumnType.Categorical if categorical else ColumnType.Numerical
        ref_col, cur_col = reference[column], current[column]
        if categorical:
            ref_col, cur_col = ref_col.astype(str), cur_col.astype(str)
        else:
            ref_col, cur_col = ref_col.astype("float64"), cur_col.astype("float64")
        method, threshold = settings.method_of(column), settings.threshold_of(column)
        test = get_stattest(ref_col, cur_col, kind, method)
        outcome = test(ref_col, cur_col, kind, threshold)
        score = float(outcome.drift_score)
        if math.isnan(score):  # a constant column on both sides (e.g. no tabs at all): no drift
            score = 0.0 if method in _DISTANCE_METHODS else 1.0
        results.append(ColumnDrift(column, method, score, threshold, bool(outcome.drifted)))
    n_drifted = sum(r.drifted for r in results)
    share = n_drifted / len(results)
    return DriftResult(
        n_rows=len(current),
        n_reference_rows=len(reference),
        columns=tuple(results),
        share_drifted=share,
        dataset_drift=share >= settings.drift_share,
        settings=settings,
    )


def build_report(
    current: pd.DataFrame, reference: pd.DataFrame, settings: DriftSettings | None = None
) -> Any:
    """The Evidently ``DataDriftPreset`` snapshot (same tests and thresholds) for HTML and JSON."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    settings = settings or DriftSettings()
    numerical = [c for c in settings.columns if c not in settings.categorical]
    categorical = [c for c in settings.columns if c in settings.categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    cols = list(settings.columns)
    cur = Dataset.from_pandas(current[cols].copy(), data_definition=definition)
    ref = Dataset.from_pandas(reference[cols].copy(), data_definition=definition)
    # The preset's drift table correlates every pair of numerical columns with np.corrcoef
    # (evidently.legacy.calculations.data_drift.get_drift_for_columns). A column with one value
    # (a window of Python files has no tab-indented line: tab_indent_ratio is 0 in every row)
    # makes that 0/0: its correlation is undefined, and NaN, shown empty, is the right entry (the
    # one Evidently's per-column path gets from pandas' DataFrame.corr, without a word). Its
    # drift test is defined all the same (the Wasserstein distance is normed by the reference's
    # spread, floored at 0.001). numpy would print "invalid value encountered in divide" for it:
    # that case, and only that one, is expected here.
    constant = constant_columns(current, numerical) + constant_columns(reference, numerical)
    expected_nan = np.errstate(invalid="ignore") if constant else contextlib.nullcontext()
    preset = DataDriftPreset(
        columns=cols,
        num_method=settings.num_method,
        cat_method=settings.cat_method,
        num_threshold=settings.num_threshold,
        cat_threshold=settings.cat_threshold,
        drift_share=settings.drift_share,
    )
    with expected_nan:
        return Report([preset]).run(cur, ref)


def constant_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """The ``columns`` of ``frame`` that hold a single value in every row (NaN aside)."""
    return [c for c in columns if frame[c].nunique(dropna=True) <= 1]


def report_share_drifted(snapshot: Any) -> float:
    """The share of drifted columns that the Evidently preset computed (for cross-checks)."""
    for metric in snapshot.dict()["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            return float(metric["value"]["share"])
    raise ValueError("the snapshot holds no DriftedColumnsCount metric")


def save_report(snapshot: Any, destination: str) -> str:
    """Write the snapshot's HTML to a local path or a ``gs://bucket/path.html`` URI; return where."""
    html = snapshot.get_html_str(as_iframe=False)
    if destination.startswith("gs://"):
        from aicrush.errors import google_credentials
        from aicrush.gcs import storage_client

        bucket_name, _, blob_name = destination[len("gs://") :].partition("/")
        if not blob_name:
            raise ValueError(f"{destination}: a gs:// report destination needs an object path")
        with google_credentials(destination):
            blob = storage_client(destination).bucket(bucket_name).blob(blob_name)
            blob.upload_from_string(html, content_type="text/html")
        return destination
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return str(path)
