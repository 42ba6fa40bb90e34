"""The HTTP service: KServe-style binary and structured CloudEvents, pairing, metrics, reports."""

from __future__ import annotations

import json

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from fastapi.testclient import TestClient

from serving.monitor.app import create_app
from tests.monitor.conftest import MODEL, VERSION, make_monitor

REQ, RESP = "org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"


def kserve_event(ce_type: str, event_id: str, data: dict, with_version: bool = False):
    """An event as KServe's logger builds it (no model version: it does not know one)."""
    attrs = {
        "type": ce_type,
        "source": "http://localhost:9081/",
        "id": event_id,
        "inferenceservicename": MODEL,
        "namespace": "default",
        "component": "predictor",
        "endpoint": "canary",
    }
    if with_version:
        attrs["modelversion"] = VERSION
    return CloudEvent(attrs, data)


def test_binary_and_structured_events_pair_into_the_window(tmp_path, reference):
    monitor = make_monitor(
        tmp_path / "state",
        reference,
        max_rows=1000,
        reports=str(tmp_path / "reports"),
        report_on="always",
    )
    try:
        client = TestClient(create_app(monitor))
        texts = ["def f(x):\n    return x\n", "body { color: red; }\n"]
        request = kserve_event(REQ, "r-1", {"instances": [{"text": t} for t in texts]})
        response = kserve_event(
            RESP,
            "r-1",
            {"predictions": [{"label": "Python", "score": 0.9}, {"label": "CSS", "score": 0.8}]},
        )
        headers, body = to_binary(request)
        assert client.post("/", headers=dict(headers), content=body).json() == {"status": "pending"}
        headers, body = to_structured(response)  # structured mode, and in the other order
        r = client.post("/", headers=dict(headers), content=body)
        assert r.status_code == 202 and r.json() == {"status": "paired"}
        # V2 request/response, binary mode, with our modelversion extension
        v2_req = kserve_event(
            REQ,
            "r-2",
            {
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["int main(){}"]}
                ]
            },
            with_version=True,
        )
        v2_resp = kserve_event(
            RESP,
            "r-2",
            {
                "outputs": [
                    {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["C"]},
                    {"name": "score", "datatype": "FP32", "shape": [1], "data": [0.7]},
                ]
            },
            with_version=True,
        )
        for ev in (v2_resp, v2_req):
            headers, body = to_binary(ev)
            assert client.post("/", headers=dict(headers), content=body).status_code == 202
        assert [r[2] for r in monitor.windows[(MODEL, VERSION)].records] == ["Python", "CSS", "C"]

        metrics = client.get("/metrics").text
        assert (
            f'aicrush_drift_open_window_rows{{model="{MODEL}",version="{VERSION}"}} 3.0' in metrics
        )
        assert (
            f'aicrush_drift_reference_info{{model="{MODEL}",sha256="{reference.sha256}"' in metrics
        )
        assert 'aicrush_monitor_events_received_total{model="' + MODEL in metrics

        health = client.get("/healthz").json()
        assert health["references"][0]["sha256"] == reference.sha256

        monitor.analyse_now(MODEL, VERSION)
        [row] = client.get("/reports").json()
        assert row["n_rows"] == 3 and row["report"].endswith(".html")
        page = client.get(f"/reports/{row['id']}")
        assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
    finally:
        monitor.close()


def test_malformed_and_unknown_events(tmp_path, reference):
    monitor = make_monitor(tmp_path / "state", reference)
    try:
        client = TestClient(create_app(monitor))
        r = client.post(
            "/",
            headers={
                "ce-id": "x",
                "ce-type": REQ,
                "ce-specversion": "1.0",
                "content-type": "application/json",
            },
            content=b"{}",
        )
        assert r.status_code == 400 and "source" in r.json()["error"]
        r = client.post(
            "/",
            headers={
                "ce-id": "x",
                "ce-type": "com.example.other",
                "ce-source": "s",
                "ce-specversion": "1.0",
            },
            content=b"{}",
        )
        assert r.status_code == 400
        # A model the monitor has no reference for: counted, not an error for the sender.
        other = CloudEvent(
            {"type": REQ, "source": "s", "id": "o-1", "inferenceservicename": "other-model"},
            {"instances": ["x"]},
        )
        other_resp = CloudEvent(
            {"type": RESP, "source": "s", "id": "o-1", "inferenceservicename": "other-model"},
            {"predictions": ["C"]},
        )
        for ev in (other, other_resp):
            h, b = to_binary(ev)
            assert client.post("/", headers=dict(h), content=b).status_code == 202
        dropped = monitor.registry.get_sample_value(
            "aicrush_monitor_events_dropped_total",
            {"model": "_unknown", "reason": "no_reference"},
        )
        assert dropped == 2  # a model name chosen by the sender is not a label value
        assert "other-model" not in client.get("/metrics").text
        malformed = monitor.registry.get_sample_value(
            "aicrush_monitor_events_dropped_total", {"model": "", "reason": "malformed"}
        )
        assert malformed == 2
    finally:
        monitor.close()


def test_unpaired_halves_expire(tmp_path, reference):
    monitor = make_monitor(tmp_path / "state", reference, pair_ttl_s=10)
    try:
        h, b = to_binary(kserve_event(REQ, "lonely", {"instances": ["x"]}))
        assert monitor.ingest(dict(h), b, now=100.0) == "pending"
        h, b = to_binary(kserve_event(REQ, "next", {"instances": ["y"]}))
        monitor.ingest(dict(h), b, now=200.0)
        unpaired = monitor.registry.get_sample_value(
            "aicrush_monitor_events_unpaired_total", {"reason": "expired"}
        )
        assert unpaired == 1
        assert json.loads(b)["instances"] == ["y"]
    finally:
        monitor.close()


def test_unpaired_halves_expire_on_the_tick_when_traffic_stops(tmp_path, reference):
    """A half whose partner never comes expired only when the next event arrived, so the
    pending gauge stayed up after traffic stopped; the periodic tick expires it now."""
    monitor = make_monitor(tmp_path / "state", reference, pair_ttl_s=10)
    try:
        h, b = to_binary(kserve_event(REQ, "lonely", {"instances": ["x"]}))
        assert monitor.ingest(dict(h), b, now=100.0) == "pending"
        assert monitor.registry.get_sample_value("aicrush_monitor_events_pending") == 1
        monitor.tick(now=105.0)
        assert monitor.registry.get_sample_value("aicrush_monitor_events_pending") == 1
        monitor.tick(now=120.0)
        assert monitor.registry.get_sample_value("aicrush_monitor_events_pending") == 0
        unpaired = monitor.registry.get_sample_value(
            "aicrush_monitor_events_unpaired_total", {"reason": "expired"}
        )
        assert unpaired == 1
    finally:
        monitor.close()


def test_logger_url_version_routes_kserve_events_per_revision(tmp_path, reference):
    """KServe's logger sends no model version; each revision's logger URL carries it instead."""
    import dataclasses

    from serving.monitor.service import Monitor, MonitorConfig
    from serving.monitor.windows import WindowPolicy

    canary_ref = dataclasses.replace(reference, model_version="4")  # loaded last
    monitor = Monitor(
        MonitorConfig(
            state_dir=tmp_path / "state", policy=WindowPolicy(max_rows=100), background=False
        ),
        references=[reference, canary_ref],
    )
    try:
        client = TestClient(create_app(monitor))
        for event_id, url, label in (
            ("s-1", f"/?modelversion={VERSION}", "Python"),
            ("c-1", "/", "C"),
        ):
            request = kserve_event(REQ, event_id, {"instances": [{"text": "x = 1\n"}]})
            response = kserve_event(RESP, event_id, {"predictions": [{"label": label, "score": 1}]})
            for ev in (request, response):
                headers, body = to_binary(ev)
                assert client.post(url, headers=dict(headers), content=body).status_code == 202
        assert [r[2] for r in monitor.windows[(MODEL, VERSION)].records] == ["Python"]
        # Without the URL's version, an event goes to the last reference loaded (the old rule).
        assert [r[2] for r in monitor.windows[(MODEL, "4")].records] == ["C"]
    finally:
        monitor.close()


def test_reports_out_of_range_are_client_errors(tmp_path, reference):
    """/reports' limit and a report id beyond SQLite's integers were 500s (OverflowError);
    limit=-1 listed every row. Each is a 422 that names the parameter now."""
    monitor = make_monitor(tmp_path / "state", reference)
    try:
        client = TestClient(create_app(monitor))
        for url, name in (
            ("/reports?limit=100000000000000000000", "limit"),
            ("/reports?limit=-1", "limit"),
            ("/reports?limit=0", "limit"),
            ("/reports/100000000000000000000", "result_id"),
            ("/reports/0", "result_id"),
        ):
            r = client.get(url)
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert name in r.text
        assert client.get("/reports?limit=1000").status_code == 200
        assert client.get("/reports/9223372036854775807").status_code == 404
    finally:
        monitor.close()


def test_a_report_that_cannot_be_written_keeps_the_windows_verdict(tmp_path, reference, split):
    """With report_on=always and a report destination that cannot be written, the window's
    verdict is still recorded and exported, and its rows leave the state (they were lost, and the
    next window dropped rows of its own)."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the reports folder should be")
    monitor = make_monitor(
        tmp_path / "state", reference, max_rows=1000, reports=str(blocked), report_on="always"
    )
    try:
        from serving.monitor.events import PairedInference

        texts = split[1]["text"].head(5).tolist()
        monitor.add_pair(
            PairedInference("r", MODEL, VERSION, "v1", texts, [("Python", 0.9)] * len(texts))
        )
        result = monitor.analyse_now(MODEL, VERSION)
        [row] = monitor.state.results(limit=5)
        assert row["n_rows"] == 5 and row["report"] is None
        assert monitor.state.load_records(MODEL, VERSION) == []
        labels = {"model": MODEL, "version": VERSION}
        assert monitor.registry.get_sample_value("aicrush_drift_window_rows", labels) == 5
        assert monitor.registry.get_sample_value("aicrush_drift_reports_failed_total", labels) == 1
        assert result.n_rows == 5
    finally:
        monitor.close()
