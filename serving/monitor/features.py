"""The request-time feature function the monitor applies to logged texts.

It is the serving path's: ``features.store.request_features`` (the Feast on-demand feature view)
when that module exists, else ``features.file_features.compute_file_features`` (which the
on-demand view itself calls). Never a re-implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from features.file_features import FEATURE_NAMES, compute_file_features


def features_of(texts: Sequence[str]) -> pd.DataFrame:
    try:
        from features.store import request_features  # type: ignore[attr-defined]
    except ImportError:
        return compute_file_features(texts)
    frame = request_features(list(texts))
    return frame[list(FEATURE_NAMES)].reset_index(drop=True).astype("float32")
