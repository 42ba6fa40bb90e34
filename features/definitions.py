"""Feast definitions of aicrush: one entity, the file statistics view and its request-time twin.

The batch view and the on-demand view both get their values from
:func:`features.file_features.compute_file_features`, so training data (materialized offline
rows) and serving (features computed from request text) cannot drift apart.

The offline source path is relative: Feast resolves it against the repo folder that
``features.store.prepare_repo`` writes, so the same objects serve every state dir. A cluster
apply points it elsewhere (``gs://...``) with ``AICRUSH_FEAST_SOURCE_PATH``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32, String

from features.file_features import FEATURE_NAMES

#: Where ``engineer_features`` writes the offline rows, relative to the feature repo.
DEFAULT_SOURCE_PATH = "data/file_statistics.parquet"

# A file is keyed by the sha256 of its content: equal content, equal features.
source_file = Entity(
    name="source_file",
    join_keys=["file_id"],
    value_type=ValueType.STRING,
    description="A source file, keyed by its sha256.",
)

file_statistics_source = FileSource(
    name="file_statistics_source",
    path=os.environ.get("AICRUSH_FEAST_SOURCE_PATH", DEFAULT_SOURCE_PATH),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

_feature_fields = [Field(name=name, dtype=Float32) for name in FEATURE_NAMES]

file_statistics = FeatureView(
    name="file_statistics",
    entities=[source_file],
    # Content-addressed rows never go stale, so no TTL: only the point-in-time bound applies.
    ttl=timedelta(0),
    schema=[Field(name="file_id", dtype=String), *_feature_fields],
    source=file_statistics_source,
    online=True,
    description="Statistics of a file's text (lengths, lines, character classes, indentation, markers).",
)

# Serving only has the text of a request, not a stored file.
text_request = RequestSource(name="text_request", schema=[Field(name="text", dtype=String)])


@on_demand_feature_view(sources=[text_request], schema=_feature_fields, mode="pandas")
def file_statistics_from_text(inputs: pd.DataFrame) -> pd.DataFrame:
    # Imported here: Feast may rebuild this function from its source text, without module globals.
    from features.file_features import compute_features_for

    return compute_features_for(inputs["text"].tolist(), index=inputs.index)


# Two services because both views expose the same feature names.
training_features = FeatureService(name="file_statistics_training", features=[file_statistics])
serving_features = FeatureService(
    name="file_statistics_serving", features=[file_statistics_from_text]
)

#: Everything ``FeatureStore.apply`` registers.
FEAST_OBJECTS = [
    source_file,
    file_statistics_source,
    file_statistics,
    file_statistics_from_text,
    training_features,
    serving_features,
]
