"""The local backend's model fetcher (:func:`serving.rollout.local.default_fetcher`)."""

from __future__ import annotations

import pytest

from aicrush.errors import CredentialsError
from serving.rollout.local import default_fetcher
from serving.rollout.machine import ModelRef
from tests.gcs_refusing import gcs_refusing_anonymous  # noqa: F401


def test_a_version_in_gs_without_credentials_names_it(
    gcs_refusing_anonymous: None,  # noqa: F811
) -> None:
    """`aicrush rollout` prints a ValueError as one line: the CredentialsError (a DataError)
    names the version and its artifacts instead of google.auth's InvalidOperation traceback.
    The registry gives the version's download URI, its artifact location in gs://."""
    artifacts = "gs://team-mlflow/aicrush/1/abc/artifacts/model"
    with pytest.raises(
        CredentialsError, match=f"no Google credentials found for version 1 \\({artifacts}\\)"
    ):
        default_fetcher(ModelRef("1", artifacts))
