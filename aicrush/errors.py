"""Errors of the data steps: each message says what is wrong and which setting or input to change."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class DataError(ValueError):
    """The data cannot be used as it is (missing source, empty source, too few classes, ...)."""


class CredentialsError(DataError):
    """Google Cloud Storage cannot be reached for want of credentials; the message names the
    ``gs://`` location and the ways to provide them."""


def google_credentials_error(uri: str, err: Exception) -> CredentialsError:
    """The :class:`CredentialsError` for ``err`` (see :func:`is_credentials_error`) met while
    reaching ``uri``."""
    from google.auth.exceptions import RefreshError

    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(err, RefreshError):
        what = f"the Google credentials for {uri} were refused ({err})"
    elif key_file:
        what = f"GOOGLE_APPLICATION_CREDENTIALS={key_file} gives no credentials for {uri} ({err})"
    else:
        what = f"no Google credentials found for {uri}"
    return CredentialsError(
        f"{what}: run `gcloud auth application-default login`, or set "
        "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file; in the cluster give the "
        "pod's Kubernetes service account Workload Identity (docs/deploy-gke.md); for "
        "fake-gcs-server set STORAGE_EMULATOR_HOST"
    )


@contextmanager
def google_credentials(uri: str) -> Iterator[None]:
    """Turn google.auth's missing or refused credentials inside the block into a
    :class:`CredentialsError` naming ``uri`` (no traceback for the user to read)."""
    try:
        yield
    except Exception as err:
        if is_credentials_error(err):
            raise google_credentials_error(uri, err) from None
        raise


def is_credentials_error(err: BaseException) -> bool:
    """Whether ``err`` is google.auth's DefaultCredentialsError (none found; also what an
    anonymous client raises on a 401, as MLflow's GCS artifact store makes it when it finds
    none) or RefreshError (refused)."""
    try:
        from google.auth import exceptions as auth
    except ImportError:  # an image without google-auth has no GCS to reach either
        return False
    return isinstance(err, auth.DefaultCredentialsError | auth.RefreshError)
