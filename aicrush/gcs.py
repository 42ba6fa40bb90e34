"""The one Google Cloud Storage client factory of every layer (ingest, artifacts, checkpoints,
drift reports): anonymous against an emulator (``STORAGE_EMULATOR_HOST``, fake-gcs-server),
else Application Default Credentials, with missing credentials as a
:class:`~aicrush.errors.CredentialsError`."""

from __future__ import annotations

import os
from typing import Any

from aicrush.errors import google_credentials


def storage_client(uri: str = "") -> Any:
    """A GCS client; anonymous against an emulator (``STORAGE_EMULATOR_HOST``), else ADC.

    Raises :class:`aicrush.errors.CredentialsError` naming ``uri`` (what the client is for) and
    the ways to provide credentials when Application Default Credentials find none.
    """
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(credentials=AnonymousCredentials(), project="aicrush-emulator")
    with google_credentials(uri or "Google Cloud Storage"):
        return storage.Client()
