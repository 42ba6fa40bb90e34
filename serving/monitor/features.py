"""The request-time feature function the monitor applies to logged texts.

It is the serving path's: ``features.store.request_features``, the transformation of the Feast
on-demand feature view, which calls ``features.file_features.compute_file_features``. Never a
re-implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from features.file_features import FEATURE_NAMES
from features.store import request_features


def features_of(texts: Sequence[str]) -> pd.DataFrame:
    frame = request_features(list(texts))
    return frame[list(FEATURE_NAMES)].reset_index(drop=True).astype("float32")
