"""A real Prometheus server scrapes the monitor on loopback; PromQL returns the drift gauge."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest

from serving.monitor.app import MonitorServer
from serving.rollout.metrics_source import PrometheusDriftVerdict, ScrapeDriftVerdict
from tests.monitor.conftest import MODEL, VERSION, free_port, make_monitor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus binary not installed (Debian package prometheus; .ci/run installs it)",
    ),
]


def test_prometheus_scrapes_the_drift_gauge(tmp_path, split, reference):
    _, pool = split
    shifted = pool[pool["prediction"].isin(["JavaScript", "CSS"])].sample(
        300, replace=True, random_state=5
    )
    monitor = make_monitor(tmp_path / "state", reference, max_rows=300)
    records = [
        (time.time(), t, p, 0.9)
        for t, p in zip(shifted["text"], shifted["prediction"], strict=True)
    ]
    monitor.add_records((MODEL, VERSION), records)  # closes and analyses one drifted window
    monitor_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: drift-monitor\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{monitor_port}']\n"
    )
    with MonitorServer(monitor, port=monitor_port):
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            query = f'aicrush_drift_dataset_drift{{model="{MODEL}",version="{VERSION}"}}'
            deadline = time.monotonic() + 60
            result: list = []
            while time.monotonic() < deadline and not result:
                time.sleep(1)
                try:
                    r = httpx.get(
                        f"http://127.0.0.1:{prom_port}/api/v1/query",
                        params={"query": query},
                        timeout=5,
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    result = r.json()["data"]["result"]
            assert result, "Prometheus returned no drift series within 60 s"
            assert result[0]["metric"]["job"] == "drift-monitor"
            assert float(result[0]["value"][1]) == 1.0
            share = httpx.get(
                f"http://127.0.0.1:{prom_port}/api/v1/query",
                params={"query": "aicrush_drift_share_drifted_columns"},
                timeout=5,
            )
            assert float(share.json()["data"]["result"][0]["value"][1]) >= 0.5
            # The canary analysis reads the same verdict both ways: through Prometheus
            # (Kubernetes backend) and from the monitor's /metrics (local backend).
            prom_verdict = PrometheusDriftVerdict(f"http://127.0.0.1:{prom_port}", MODEL)
            assert prom_verdict(VERSION) is True
            assert prom_verdict("no-such-version") is None  # no window closed: no check
            scrape = ScrapeDriftVerdict(f"http://127.0.0.1:{monitor_port}/metrics", MODEL)
            assert scrape(VERSION) is True and scrape("no-such-version") is None
        finally:
            prom.terminate()
            try:
                prom.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
    monitor.close()
