"""gs:// without Google credentials: a CredentialsError naming the URI and how to provide them,
never google.auth's DefaultCredentialsError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aicrush.config import IngestConfig
from aicrush.errors import CredentialsError, DataError

HOW = (
    "gcloud auth application-default login",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "Workload Identity",
    "STORAGE_EMULATOR_HOST",
)


@pytest.fixture
def no_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ADC pointed at a key file that is not there: it fails at once, with no metadata probe."""
    missing = tmp_path / "missing-key.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    return missing


def test_a_gs_source_without_credentials_names_the_source_and_the_ways_to_log_in(
    tmp_path: Path,
) -> None:
    """As a newcomer meets it: no key file, no gcloud login, not on GCE (a subprocess, so
    google.auth reads this environment from scratch)."""
    code = (
        "from pathlib import Path\n"
        "from aicrush.config import IngestConfig\n"
        "from components.ingest_sources import ingest\n"
        "try:\n"
        "    ingest(IngestConfig(sources=('gs://no-creds-bucket/code',)), Path('out'), Path('st'))\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, '|', err)\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")
        and not k.startswith(("GCE_", "CLOUDSDK_", "GOOGLE_CLOUD"))
    }
    env.update(NO_GCE_CHECK="true", CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    kind, _, message = done.stdout.strip().partition(" | ")
    assert kind == "CredentialsError", done.stdout + done.stderr
    assert "no Google credentials found for source gs://no-creds-bucket/code" in message
    assert all(how in message for how in HOW), message


def test_a_key_file_that_is_not_there_is_named(no_key_file: Path, tmp_path: Path) -> None:
    from components.ingest_sources import ingest

    with pytest.raises(CredentialsError) as err:
        ingest(IngestConfig(sources=("gs://b/p",)), tmp_path / "out", tmp_path / "state")
    assert f"GOOGLE_APPLICATION_CREDENTIALS={no_key_file}" in str(err.value)
    assert "gs://b/p" in str(err.value) and all(how in str(err.value) for how in HOW)
    assert isinstance(err.value, DataError)  # the CLI and the run output treat it as one


@pytest.mark.parametrize(
    "call",
    [
        lambda store, tmp: store.read_text("gs://art/run/state.json"),
        lambda store, tmp: store.write_text("gs://art/run/state.json", "{}"),
        lambda store, tmp: store.download_folder("gs://art/run/model", tmp / "dl"),
        lambda store, tmp: store.upload_folder(tmp, "gs://art/run/model"),
    ],
)
def test_artifact_locations_without_credentials_name_the_uri(
    no_key_file: Path, tmp_path: Path, call
) -> None:
    from components import object_store

    with pytest.raises(CredentialsError, match=r"for gs://art/run/"):
        call(object_store, tmp_path)


def test_credentials_refused_when_used_name_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found at first, refused on the first request (an expired `gcloud auth` login)."""
    from google.auth.exceptions import RefreshError

    from components import object_store
    from components.languages import LanguageTable
    from components.sources import gcs
    from components.sources.base import SourceContext

    class Expired:
        def list_blobs(self, *args, **kwargs):
            raise RefreshError("Reauthentication is needed.")

        def bucket(self, name):
            raise RefreshError("Reauthentication is needed.")

    ctx = SourceContext(table=LanguageTable(), gcs_client=Expired())
    with pytest.raises(CredentialsError, match=r"for source gs://b/p were refused \(Reauth"):
        gcs.candidates("gs://b/p", ctx)
    monkeypatch.setattr(object_store, "_client", lambda uri: Expired())
    with pytest.raises(CredentialsError, match=r"for gs://b/x.json were refused"):
        object_store.read_text("gs://b/x.json")


def test_the_emulator_needs_no_credentials(
    no_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.sources.gcs import storage_client

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    assert storage_client("gs://b/p").project == "aicrush-emulator"
